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


# Tests marked `slow` (scripts and whole trainings in subprocesses, the README's snippets) run
# when TFDP_RUN_SLOW=1, as CI sets it; the default `make test` skips them, saying why.
RUN_SLOW = os.environ.get("TFDP_RUN_SLOW") == "1"


def pytest_collection_modifyitems(config, items):
    """Skips the `slow` tests unless TFDP_RUN_SLOW=1."""
    if RUN_SLOW:
        return
    skip = pytest.mark.skip(reason="slow: TFDP_RUN_SLOW=1 make test runs it (CI does)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
