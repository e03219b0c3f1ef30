"""A run whose every update is the DP noise alone: the resume and noise tests' fixture.

`no_gradient` (a model, registered by a test with monkeypatch) sees only zero inputs and
has no bias, so every clipped gradient is 0; `zeros()` is the matching data set.
"""

import keras
import numpy as np

from tfdp.data import Dataset


def no_gradient(shape, classes, **_):
    """Zero inputs and no bias: every clipped gradient is 0, each update the noise alone."""
    x = keras.Input(shape)
    return keras.Model(x, keras.layers.Dense(classes, use_bias=False,
                                             kernel_initializer="zeros")(x))


def zeros() -> Dataset:
    """64 zero training rows (two classes) and 8 test rows."""
    x = np.zeros((64, 4), np.float32)
    y = np.arange(64) % 2
    return Dataset(name="zeros", x_train=x, y_train=y, x_test=x[:8], y_test=y[:8],
                   class_names=("a", "b"))
