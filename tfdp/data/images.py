"""Image helpers shared by the file loaders: decode, grayscale, resize, scale to [0, 1]."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from tfdp._validation import check_positive_int

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")


def check_image_size(image_size: Optional[int]) -> Optional[int]:
    """`image_size` as a positive int (pixels per side), or None to keep the stored size."""
    return None if image_size is None else check_positive_int("image_size", image_size)


def load_image_files(
    paths: Sequence[str], image_size: int, *, channels: int = 1, batch_size: int = 64
) -> np.ndarray:
    """Decodes JPEG/PNG files to float32 (n, image_size, image_size, channels) in [0, 1].

    Colour files are converted to `channels` (1 = grayscale) by the decoder; every
    image is resized (bilinear, antialiased) to a square of `image_size` pixels.
    """
    image_size = check_positive_int("image_size", image_size)

    def decode(path):
        raw = tf.io.read_file(path)
        image = tf.io.decode_image(raw, channels=channels, expand_animations=False)
        image = tf.image.resize(tf.cast(image, tf.float32) / 255.0, (image_size, image_size),
                                antialias=True)
        return tf.clip_by_value(image, 0.0, 1.0)

    if not paths:
        return np.zeros((0, image_size, image_size, channels), np.float32)
    pipeline = (
        tf.data.Dataset.from_tensor_slices(list(paths))
        .map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .batch(batch_size)
    )
    return np.concatenate([batch.numpy() for batch in pipeline]).astype(np.float32)


def to_unit_float(images: np.ndarray) -> np.ndarray:
    """uint8 images (0..255) to float32 in [0, 1]; float images are checked, not rescaled."""
    images = np.asarray(images)
    if np.issubdtype(images.dtype, np.integer):
        return images.astype(np.float32) / 255.0
    images = images.astype(np.float32)
    if images.size and (images.min() < 0 or images.max() > 1):
        raise ValueError(
            "Float images must already be in [0, 1]; got values in "
            f"[{images.min():.3g}, {images.max():.3g}]. Store them as uint8 0..255 instead."
        )
    return images


def resize_images(images: np.ndarray, image_size: Optional[int], batch_size: int = 512) -> np.ndarray:
    """Resizes (n, h, w, c) float images to squares of `image_size` (None: unchanged)."""
    if image_size is None or images.shape[1:3] == (image_size, image_size):
        return images
    out = [
        tf.clip_by_value(
            tf.image.resize(images[i:i + batch_size], (image_size, image_size), antialias=True),
            0.0, 1.0,
        ).numpy()
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(out).astype(np.float32)
