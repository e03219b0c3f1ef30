"""Shared test set-up: quiet TensorFlow, fixed seeds, small data."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import keras
import tensorflow as tf  # noqa: E402


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same global seeds."""
    keras.backend.clear_session()
    tf.random.set_seed(1234)
    np.random.seed(1234)
    yield
