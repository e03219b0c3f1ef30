"""Convolutional classifiers: the paper's pneumonia CNN, TF Privacy's tutorial CNN, a digits CNN.

All return logits (no softmax) and use no BatchNormalization, which mixes examples in a
batch and so breaks per-example sensitivity.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import keras
import tensorflow as tf

from tfdp._validation import check_positive_int, check_probability


def _image_shape(input_shape: Sequence[int], model: str) -> Tuple[int, int, int]:
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 3:
        raise ValueError(
            f"{model} needs image inputs of shape (height, width, channels), got {shape}. "
            "Use the 'mlp' model for tabular data."
        )
    return shape


def pneumonia_cnn(
    input_shape: Sequence[int] = (64, 64, 1),
    num_classes: int = 2,
    *,
    filters: Sequence[int] = (16, 32, 64),
    dense_units: int = 64,
    dropout: float = 0.25,
    name: str = "pneumonia_cnn",
) -> keras.Model:
    """The CNN of the dynamic-DP paper's setting: grayscale chest X-rays, normal vs pneumonia.

    One block per entry of `filters` (3x3 convolution with ReLU, then 2x2 max
    pooling), then Flatten, a ReLU dense layer with dropout and the logits layer.
    `filters` and `dense_units` set its size; the image must be at least
    2**len(filters) pixels on each side.
    """
    height, width, channels = _image_shape(input_shape, "pneumonia_cnn")
    filters = [check_positive_int("filters", f) for f in filters]
    if not filters:
        raise ValueError("`filters` needs at least one convolution width, e.g. (16, 32, 64).")
    if min(height, width) < 2 ** len(filters):
        raise ValueError(
            f"pneumonia_cnn with {len(filters)} pooling blocks needs images of at least "
            f"{2 ** len(filters)}x{2 ** len(filters)} pixels, got {height}x{width}; use "
            "fewer `filters` or a larger image_size."
        )
    check_probability("dropout", dropout)
    inputs = keras.Input(shape=(height, width, channels), name="image")
    x = inputs
    for i, width_i in enumerate(filters):
        x = keras.layers.Conv2D(width_i, 3, padding="same", activation="relu", name=f"conv{i}")(x)
        x = keras.layers.MaxPool2D(2, name=f"pool{i}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(check_positive_int("dense_units", dense_units), activation="relu",
                              name="dense")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    logits = keras.layers.Dense(check_positive_int("num_classes", num_classes), name="logits")(x)
    return keras.Model(inputs, logits, name=name)


def tutorial_cnn(
    input_shape: Sequence[int] = (28, 28, 1), num_classes: int = 10, *, name: str = "tutorial_cnn"
) -> keras.Model:
    """TF Privacy's MNIST tutorial CNN (28x28x1 in the tutorial; any image of 16x16 or more).

    Conv2D(16, 8, stride 2, same, ReLU), MaxPool2D(2, 1), Conv2D(32, 4, stride 2,
    valid, ReLU), MaxPool2D(2, 1), Flatten, Dense(32, ReLU), Dense(num_classes).
    """
    height, width, channels = _image_shape(input_shape, "tutorial_cnn")
    if min(height, width) < 16:
        raise ValueError(
            f"tutorial_cnn needs images of at least 16x16 pixels, got {height}x{width}; use "
            "'digits_cnn' for 8x8 digits."
        )
    return keras.Sequential(
        [
            keras.Input(shape=(height, width, channels), name="image"),
            keras.layers.Conv2D(16, 8, strides=2, padding="same", activation="relu"),
            keras.layers.MaxPool2D(2, 1),
            keras.layers.Conv2D(32, 4, strides=2, padding="valid", activation="relu"),
            keras.layers.MaxPool2D(2, 1),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(check_positive_int("num_classes", num_classes), name="logits"),
        ],
        name=name,
    )


def digits_cnn(
    input_shape: Sequence[int] = (8, 8, 1),
    num_classes: int = 10,
    *,
    filters: Sequence[int] = (16, 32),
    dense_units: int = 32,
    name: str = "digits_cnn",
) -> keras.Model:
    """A small CNN for 8x8 grayscale digits (about 9k weights with the defaults).

    Two blocks of 3x3 convolution (ReLU, same padding) and 2x2 max pooling, then
    Flatten, Dense(dense_units, ReLU) and the logits layer.
    """
    height, width, channels = _image_shape(input_shape, "digits_cnn")
    filters = [check_positive_int("filters", f) for f in filters]
    if min(height, width) < 2 ** len(filters):
        raise ValueError(
            f"digits_cnn with {len(filters)} pooling blocks needs images of at least "
            f"{2 ** len(filters)}x{2 ** len(filters)} pixels, got {height}x{width}."
        )
    layers = [keras.Input(shape=(height, width, channels), name="image")]
    for width_i in filters:
        layers += [
            keras.layers.Conv2D(width_i, 3, padding="same", activation="relu"),
            keras.layers.MaxPool2D(2),
        ]
    layers += [
        keras.layers.Flatten(),
        keras.layers.Dense(check_positive_int("dense_units", dense_units), activation="relu"),
        keras.layers.Dense(check_positive_int("num_classes", num_classes), name="logits"),
    ]
    return keras.Sequential(layers, name=name)
