"""PneumoniaMNIST (MedMNIST) `.npz` files: train_images, train_labels, val_*, test_*."""

from __future__ import annotations

import glob
import os
from typing import Optional

import numpy as np

from tfdp.data.dataset import Dataset, class_names_or_indices, ensure_channel_axis
from tfdp.data.images import check_image_size, resize_images, to_unit_float

NPZ_HELP = (
    "Expected a MedMNIST .npz file (e.g. pneumoniamnist.npz from medmnist.com / Zenodo) with "
    "the arrays train_images, train_labels, test_images, test_labels and optionally "
    "val_images, val_labels; images are (n, H, W) or (n, H, W, C) uint8, labels (n,) or (n, 1). "
    "Pass its path, or the folder holding it, as data_dir."
)
PNEUMONIA_CLASSES = ("normal", "pneumonia")


def _find_npz(data_dir: Optional[str]) -> str:
    if data_dir is None:
        raise ValueError(f"The pneumonia_mnist data set needs --data_dir (data_dir=...). {NPZ_HELP}")
    if os.path.isfile(data_dir):
        return data_dir
    if not os.path.isdir(data_dir):
        raise ValueError(f"pneumonia_mnist: {data_dir!r} does not exist. {NPZ_HELP}")
    preferred = os.path.join(data_dir, "pneumoniamnist.npz")
    if os.path.isfile(preferred):
        return preferred
    candidates = sorted(glob.glob(os.path.join(data_dir, "pneumoniamnist*.npz")))
    if len(candidates) == 1:
        return candidates[0]
    if len(candidates) > 1:
        raise ValueError(
            f"pneumonia_mnist: several files in {data_dir}: {[os.path.basename(c) for c in candidates]}; "
            "pass the path of the one to use as data_dir."
        )
    raise ValueError(f"pneumonia_mnist: no pneumoniamnist*.npz in {data_dir!r}. {NPZ_HELP}")


def load_pneumonia_mnist(
    data_dir: Optional[str], *, image_size: Optional[int] = None,
    seed: int = 0,  # pylint: disable=unused-argument  (the file fixes the split)
    class_names=None,
) -> Dataset:
    """Loads a PneumoniaMNIST (or any MedMNIST 2D) `.npz` as float images in [0, 1].

    Args:
      data_dir: the .npz file or a folder with one `pneumoniamnist*.npz`.
      image_size: resize to this many pixels per side (None: keep, 28 for the classic file).
      class_names: names of the label indices (default: normal, pneumonia for two classes).
    """
    path = _find_npz(data_dir)
    image_size = check_image_size(image_size)
    with np.load(path) as archive:
        arrays = {key: archive[key] for key in archive.files}
    missing = [k for k in ("train_images", "train_labels", "test_images", "test_labels")
               if k not in arrays]
    if missing:
        raise ValueError(f"pneumonia_mnist: {path} lacks {missing} (has {sorted(arrays)}). {NPZ_HELP}")

    def split(name):
        if f"{name}_images" not in arrays:
            return None, None
        images = resize_images(to_unit_float(ensure_channel_axis(arrays[f"{name}_images"])),
                               image_size)
        labels = np.asarray(arrays[f"{name}_labels"]).reshape(-1)
        if len(labels) != len(images):
            raise ValueError(
                f"pneumonia_mnist: {name}_labels has {len(labels)} entries for "
                f"{len(images)} {name}_images. {NPZ_HELP}"
            )
        return images, labels

    x_train, y_train = split("train")
    x_test, y_test = split("test")
    x_val, y_val = split("val")
    num_classes = int(max(y.max() for y in (y_train, y_test, y_val) if y is not None and len(y))) + 1
    if class_names is None and num_classes == 2:
        class_names = PNEUMONIA_CLASSES
    return Dataset(
        name="pneumonia_mnist",
        x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, x_val=x_val, y_val=y_val,
        class_names=class_names_or_indices(class_names, num_classes),
        group_source=("PneumoniaMNIST carries no patient ids (each image is its own unit; "
                      "per-patient DP is not available for this source)"),
        description=(
            f"MedMNIST npz {path}, images scaled to [0, 1]"
            + (f", resized to {image_size}x{image_size}" if image_size else "")
            + "; train/val/test as given in the file."
        ),
    )
