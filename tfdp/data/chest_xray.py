"""The chest X-ray pneumonia folder layout (Kermany et al.; Kaggle "chest-xray-pneumonia").

    DATA_DIR/train/NORMAL/*.jpeg      DATA_DIR/train/PNEUMONIA/*.jpeg
    DATA_DIR/test/NORMAL/*.jpeg       DATA_DIR/test/PNEUMONIA/*.jpeg
    DATA_DIR/val/...                  (optional, same class folders)

JPEG or PNG, any size and colour; loaded as grayscale, resized to a square.
The public collection's file names carry patient ids (personN_bacteria_M.jpeg,
IM-NNNN-MMMM.jpeg, ...): they become `Dataset.groups_train` for per-patient DP.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

import numpy as np

from tfdp.data.dataset import Dataset
from tfdp.data.groups import PATIENT_FILE_PATTERNS, patient_id_from_filename
from tfdp.data.images import IMAGE_EXTENSIONS, check_image_size, load_image_files

DEFAULT_IMAGE_SIZE = 64

LAYOUT_HELP = (
    "Expected layout: DATA_DIR/train/<CLASS>/*.jpeg|.jpg|.png and DATA_DIR/test/<CLASS>/..., "
    "with the same class folders in each (for the pneumonia data: NORMAL and PNEUMONIA), "
    "and optionally DATA_DIR/val/<CLASS>/.... The Kaggle download 'chest-xray-pneumonia' "
    "unpacks to this layout under chest_xray/."
)


def _list_split(split_dir: str) -> Dict[str, List[str]]:
    classes = sorted(
        d for d in os.listdir(split_dir)
        if os.path.isdir(os.path.join(split_dir, d)) and not d.startswith(".")
    )
    files = {}
    for name in classes:
        folder = os.path.join(split_dir, name)
        files[name] = sorted(
            os.path.join(folder, f) for f in os.listdir(folder)
            if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")
        )
    return files


def _resolve_root(data_dir: Optional[str]) -> str:
    if data_dir is None:
        raise ValueError(f"The chest_xray data set needs --data_dir (data_dir=...). {LAYOUT_HELP}")
    if not os.path.isdir(data_dir):
        raise ValueError(f"chest_xray: data_dir {data_dir!r} does not exist. {LAYOUT_HELP}")
    nested = os.path.join(data_dir, "chest_xray")
    if not os.path.isdir(os.path.join(data_dir, "train")) and os.path.isdir(
            os.path.join(nested, "train")):
        return nested  # the folder the Kaggle archive unpacks to
    return data_dir


def patient_groups(paths: List[str]) -> Tuple[Optional[np.ndarray], str]:
    """Patient ids parsed from the file names, and where they come from (or why none).

    All or nothing: a single name that does not parse leaves no ids, since an
    image of unknown patient could belong to any of them.
    """
    ids = [patient_id_from_filename(path) for path in paths]
    unmatched = [os.path.basename(p) for p, i in zip(paths, ids) if i is None]
    if not unmatched:
        return np.asarray(ids), f"patient ids from the file names ({PATIENT_FILE_PATTERNS})"
    return None, (
        f"no patient ids: {len(unmatched)} of {len(paths)} training file names (e.g. "
        f"{unmatched[0]!r}) do not match the public collection's patterns "
        f"({PATIENT_FILE_PATTERNS}), so per-patient training is not available (use "
        "Dataset.with_synthetic_groups for pseudo-patients)"
    )


def load_chest_xray(
    data_dir: Optional[str], *, image_size: Optional[int] = DEFAULT_IMAGE_SIZE,
    seed: int = 0,  # pylint: disable=unused-argument  (the folders fix the split)
) -> Dataset:
    """Loads the chest X-ray folders as grayscale `image_size` squares in [0, 1].

    Classes are the class folders in sorted order (NORMAL = 0, PNEUMONIA = 1). The
    data are imbalanced (about 3 pneumonia images per normal one in the Kaggle
    release): see `Dataset.class_weights`. When every training file name follows
    the public collection's patterns, `groups_train` holds the patient ids (see
    `tfdp.data.patient_id_from_filename`); otherwise it is None and `group_source`
    says why.
    """
    root = _resolve_root(data_dir)
    image_size = check_image_size(image_size) or DEFAULT_IMAGE_SIZE
    splits: Dict[str, Dict[str, List[str]]] = {}
    for split in ("train", "test", "val"):
        split_dir = os.path.join(root, split)
        if os.path.isdir(split_dir):
            splits[split] = _list_split(split_dir)
        elif split != "val":
            raise ValueError(f"chest_xray: {split_dir!r} is missing. {LAYOUT_HELP}")
    class_names = tuple(splits["train"])
    if len(class_names) < 2:
        raise ValueError(
            f"chest_xray: found class folders {list(class_names)} in {root}/train; need at "
            f"least two. {LAYOUT_HELP}"
        )
    for split, files in splits.items():
        if tuple(files) != class_names:
            raise ValueError(
                f"chest_xray: {split}/ has class folders {list(files)} but train/ has "
                f"{list(class_names)}; they must match. {LAYOUT_HELP}"
            )
        empty = [c for c, paths in files.items() if not paths]
        if empty and split != "val":
            raise ValueError(
                f"chest_xray: no .jpeg/.jpg/.png images in {split}/{empty[0]}. {LAYOUT_HELP}"
            )

    def arrays(split: str) -> Tuple[np.ndarray, np.ndarray, List[str]]:
        """(images, labels, file paths) of one split."""
        paths, labels = [], []
        for index, name in enumerate(class_names):
            paths += splits[split][name]
            labels += [index] * len(splits[split][name])
        images = load_image_files(paths, image_size, channels=1)
        return images, np.asarray(labels, np.int64), paths

    x_train, y_train, train_paths = arrays("train")
    groups_train, group_source = patient_groups(train_paths)
    x_test, y_test, _ = arrays("test")
    x_val = y_val = None
    if "val" in splits and any(splits["val"].values()):
        x_val, y_val, _ = arrays("val")
    return Dataset(
        name="chest_xray",
        x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
        x_val=x_val, y_val=y_val,
        class_names=class_names,
        groups_train=groups_train,
        group_source=group_source,
        description=(
            f"chest X-ray folders at {root}, grayscale, resized to {image_size}x{image_size}, "
            "scaled to [0, 1]; train/test/val as given by the folders."
        ),
    )
