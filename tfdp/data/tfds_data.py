"""Any TFDS image-classification data set already prepared in a local data_dir."""

from __future__ import annotations

import os
from typing import Optional

import numpy as np

from tfdp.data.dataset import Dataset, class_names_or_indices, stratified_split
from tfdp.data.images import check_image_size, resize_images, to_unit_float


def _prepare_help(name: str, data_dir: str) -> str:
    return (
        f"Prepare it first on a machine with internet access, e.g. "
        f"`tfds build {name} --data_dir={data_dir}` or "
        f"`python -c \"import tensorflow_datasets as tfds; "
        f"tfds.builder('{name}', data_dir='{data_dir}').download_and_prepare()\"`, and copy "
        f"the folder here; or pass download=True (--download) to let TFDS download it now."
    )


def load_tfds(
    name: str,
    data_dir: Optional[str],
    *,
    image_size: Optional[int] = None,
    grayscale: bool = False,
    download: bool = False,
    seed: int = 0,
    test_fraction: float = 0.2,
) -> Dataset:
    """Loads a prepared TFDS image-classification data set into memory.

    Uses the builder's supervised keys (image, label). The "train" and "test" splits
    are used as given; without a "test" split, a stratified `test_fraction` of
    "train" (seeded by `seed`) is held out. Images are scaled to [0, 1], optionally
    converted to grayscale and resized to `image_size` squares.

    Nothing is downloaded unless `download=True`; an absent data set raises a
    ValueError that says how to prepare it.
    """
    import tensorflow as tf
    import tensorflow_datasets as tfds

    if not name:
        raise ValueError("Give the TFDS data set's name, e.g. 'tfds:mnist'.")
    if data_dir is None:
        raise ValueError(
            f"TFDS data set {name!r} needs --data_dir (data_dir=...): the folder where it is "
            "prepared (tfdp never reads TFDS's default ~/tensorflow_datasets implicitly)."
        )
    image_size = check_image_size(image_size)
    if not os.path.isdir(data_dir) and not download:
        raise ValueError(f"TFDS data_dir {data_dir!r} does not exist. {_prepare_help(name, data_dir)}")
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(
            f"TFDS does not know a data set {name!r} and none is prepared under {data_dir!r}. "
            "Check the name against the TFDS catalog (tensorflow.org/datasets/catalog). "
            + _prepare_help(name, data_dir)
        ) from None
    if not builder.is_prepared():
        if not download:
            raise ValueError(
                f"TFDS data set {name!r} is not prepared in {data_dir!r}. "
                + _prepare_help(name, data_dir)
            )
        builder.download_and_prepare()
    info = builder.info
    if not info.supervised_keys:
        raise ValueError(f"TFDS data set {name!r} has no (input, label) supervised keys; "
                         "tfdp loads image-classification data sets only.")
    label_feature = info.features[info.supervised_keys[1]]
    if not isinstance(label_feature, tfds.features.ClassLabel):
        raise ValueError(f"TFDS data set {name!r}: its label is not a ClassLabel; tfdp loads "
                         "image-classification data sets only.")

    def split_arrays(split):
        batch = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, as_supervised=True))
        images, labels = batch
        if images.ndim != 4:
            raise ValueError(f"TFDS data set {name!r}: inputs of shape {images.shape[1:]} are "
                             "not images (height, width, channels).")
        images = to_unit_float(images)
        if grayscale and images.shape[-1] == 3:
            images = tf.image.rgb_to_grayscale(images).numpy()
        return resize_images(images, image_size), np.asarray(labels).reshape(-1)

    splits = set(info.splits.keys())
    if "train" not in splits:
        raise ValueError(f"TFDS data set {name!r} has no 'train' split (has {sorted(splits)}).")
    x_train, y_train = split_arrays("train")
    if "test" in splits:
        x_test, y_test = split_arrays("test")
        how = "TFDS train/test splits"
    else:
        x_train, x_test, y_train, y_test = stratified_split(x_train, y_train, test_fraction, seed)
        how = f"stratified hold-out of {test_fraction} of 'train' (seed {seed})"
    x_val = y_val = None
    if "validation" in splits:
        x_val, y_val = split_arrays("validation")
    return Dataset(
        name=f"tfds:{name}",
        x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, x_val=x_val, y_val=y_val,
        class_names=class_names_or_indices(label_feature.names, label_feature.num_classes),
        description=(
            f"TFDS {builder.info.full_name} from {data_dir}, images scaled to [0, 1]"
            + (", grayscale" if grayscale else "")
            + (f", resized to {image_size}x{image_size}" if image_size else "")
            + f"; {how}."
        ),
    )
