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
                                        kernel_initializer="zeros" if not hidden_units
                                        else "glorot_uniform", name="logits"))
    return keras.Sequential(layers, name=name)


def linear(
    input_shape: Sequence[int] = (30,),
    num_classes: int = 2,
    *,
    name: str = "linear",
) -> keras.Model:
    """Multinomial logistic regression: inputs flattened, one Dense layer of logits from zero.

    Starting from zero weights costs no privacy and is the usual start of a convex DP
    model; with few examples it is often the most accurate model under DP.
    """
    return mlp(input_shape, num_classes, hidden_units=(), name=name)
