"""A multilayer perceptron for tabular data (or flattened images); outputs logits."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import keras
import tensorflow as tf

from tfdp._validation import check_positive_int


def mlp(
    input_shape: Sequence[int] = (30,),
    num_classes: int = 2,
    *,
    hidden_units: Sequence[int] = (64, 32),
    activation: str = "relu",
    name: str = "mlp",
) -> keras.Model:
    """Dense ReLU layers of `hidden_units` widths, then the logits layer.

    Inputs of more than one axis (e.g. images) are flattened first.
    """
    shape = tuple(int(d) for d in input_shape)
    if not shape or int(np.prod(shape)) < 1:
        raise ValueError(f"mlp needs a non-empty input shape, got {shape}.")
    layers = [keras.Input(shape=shape, name="features")]
    if len(shape) > 1:
        layers.append(keras.layers.Flatten())
    for units in hidden_units:
        layers.append(keras.layers.Dense(check_positive_int("hidden_units", units),
                                            activation=activation))
    layers.append(keras.layers.Dense(check_positive_int("num_classes", num_classes),
                                        name="logits"))
    return keras.Sequential(layers, name=name)


def linear(
    input_shape: Sequence[int] = (30,),
    num_classes: int = 2,
    *,
    normalize: bool = False,
    name: str = "linear",
) -> keras.Model:
    """Multinomial logistic regression: inputs flattened, one Dense layer of logits from zero.

    With `normalize`, each example's features are first standardized on their own (its own
    mean and spread, no statistics of the data set: no privacy cost), which makes every
    example's gradient the same size and suits DP's per-example clipping. Starting from
    zero weights is the usual start of a convex DP model; with few examples such a model
    is often the most accurate one under DP.
    """
    shape = tuple(int(d) for d in input_shape)
    if not shape or int(np.prod(shape)) < 1:
        raise ValueError(f"linear needs a non-empty input shape, got {shape}.")
    layers = [keras.Input(shape=shape, name="features"), keras.layers.Flatten()]
    if normalize:
        layers.append(keras.layers.LayerNormalization(center=False, scale=False, epsilon=1e-6,
                                                      name="per_example_standardization"))
    layers.append(keras.layers.Dense(check_positive_int("num_classes", num_classes),
                                     kernel_initializer="zeros", name="logits"))
    return keras.Sequential(layers, name=name)


def normalized_linear(input_shape: Sequence[int] = (30,), num_classes: int = 2, *,
                      name: str = "normalized_linear") -> keras.Model:
    """Logistic regression on each example's standardized features (`linear(normalize=True)`)."""
    return linear(input_shape, num_classes, normalize=True, name=name)
