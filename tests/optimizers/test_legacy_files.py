"""Files and checkpoints written before the DP optimizer became a wrapper still load.

The fixtures (fixtures/make_legacy_fixtures.py, run with tfdp at commit 640906a) hold a
2-layer Dense model after a few DP steps with each of the three DP optimizers, when each was
one subclass of its Keras class: one list of variables (step counter, learning rate, ledger,
slots) and a flat config. Today the ledger is the wrapper's and the slots the inner
optimizer's; both must come back, and training must go on from them.
"""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdp
from tfdp.run.checkpoint import is_legacy_dp_checkpoint, restore_legacy_dp_checkpoint

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
KEYS = ("sgd", "adam", "adagrad")
# The fixtures' optimizers (as in make_legacy_fixtures.py).
SETTINGS = {
    "sgd": (tfdp.DPKerasSGDOptimizer,
            dict(l2_norm_clip=1.0, noise_multiplier=0.5, learning_rate=0.1, momentum=0.9)),
    "adam": (tfdp.DPKerasAdamOptimizer,
             dict(l2_norm_clip=1.0, noise_multiplier=0.5, learning_rate=0.01)),
    "adagrad": (tfdp.DPKerasAdagradOptimizer,
                dict(l2_norm_clip=1.0, noise_multiplier=0.5, noise_schedule="random",
                     noise_probability=0.5, on_skip="drop", learning_rate=0.1)),
}


def _expected(key):
    with open(os.path.join(FIXTURES, "legacy_expected.json")) as f:
        return json.load(f)[key]


def _data():
    rng = np.random.default_rng(1)
    return rng.normal(size=(8, 3)).astype(np.float32), rng.integers(0, 2, size=8)


def _check_restored(optimizer, model, expected):
    assert int(optimizer.iterations.numpy()) == expected["iterations"]
    assert int(optimizer.noisy_steps.numpy()) == expected["noisy_steps"]
    assert int(optimizer.dropped_steps.numpy()) == expected["dropped_steps"]
    # The inner optimizer's step counter drives its update rule (Adam's bias correction).
    assert int(optimizer.inner_optimizer.iterations.numpy()) == expected["iterations"]
    # Every old variable, by the old order: the learning rate and the slots (Adam's
    # moments, SGD's momentum, Adagrad's accumulators) are the inner optimizer's now.
    legacy = optimizer._legacy_variables()  # pylint: disable=protected-access
    saved = list(expected["variables"].items())
    assert len(legacy) == len(saved)
    slots = 0
    for variable, (old_path, value) in zip(legacy, saved):
        assert old_path.split("/")[-1].endswith(variable.path.split("/")[-1].split("_")[-1])
        np.testing.assert_allclose(variable.numpy(), np.asarray(value), rtol=1e-6)
        slots += any(s in old_path for s in ("momentum", "velocity", "accumulator"))
    assert slots >= 4
    assert slots == len(optimizer.inner_optimizer.variables) - 2  # all but iteration, rate
    assert any(np.any(np.asarray(value) != 0) for path, value in saved
               if "momentum" in path or "accumulator" in path)
    for weight, value in zip(model.get_weights(), expected["weights"]):
        np.testing.assert_allclose(weight, np.asarray(value), rtol=1e-6)


def _train_on(model, optimizer, expected):
    x, y = _data()
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    steps = int(optimizer.iterations.numpy()) + int(optimizer.dropped_steps.numpy())
    assert steps == expected["iterations"] + expected["dropped_steps"] + 2
    assert int(optimizer.inner_optimizer.iterations.numpy()) == int(optimizer.iterations.numpy())


@pytest.mark.parametrize("key", KEYS)
def test_a_keras_file_of_the_old_subclass_loads_into_the_wrapper_and_trains_on(key, tmp_path):
    expected = _expected(key)
    model = keras.models.load_model(os.path.join(FIXTURES, f"legacy_{key}.keras"))
    optimizer = model.optimizer
    assert type(optimizer).__name__ == expected["class_name"]
    assert isinstance(optimizer, tfdp.DPOptimizer)
    _check_restored(optimizer, model, expected)
    _train_on(model, optimizer, expected)
    # Saved again, it has today's layout and round-trips.
    path = str(tmp_path / "again.keras")
    model.save(path)
    again = keras.models.load_model(path)
    for a, b in zip(again.optimizer.variables, optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("key", KEYS)
def test_a_checkpoint_of_the_old_subclass_restores_into_the_wrapper(key, tmp_path):
    expected = _expected(key)
    path = os.path.join(FIXTURES, f"legacy_{key}_ckpt", "ckpt-1")
    keras.utils.set_random_seed(0)
    model = tfdp.make_private(keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(2)]))
    cls, settings = SETTINGS[key]
    optimizer = cls(**settings)
    model.compile(optimizer=optimizer, loss=LOSS)
    optimizer.build(model.trainable_variables)
    assert is_legacy_dp_checkpoint(path, optimizer)
    # A plain restore of the compiled model reaches the optimizer's old variable list: it is
    # not matched by position (restores nothing into the wrapper, fails nothing).
    tf.train.Checkpoint(model=model).restore(path).expect_partial()
    assert int(optimizer.noisy_steps.numpy()) == expected["noisy_steps"]  # a named attribute
    epoch = tf.Variable(0, dtype=tf.int64)
    restore_legacy_dp_checkpoint(path, model, optimizer, epoch=epoch)
    assert int(epoch.numpy()) == 1
    _check_restored(optimizer, model, expected)
    _train_on(model, optimizer, expected)



def test_todays_checkpoint_is_not_taken_for_an_old_one(tmp_path):
    model = tfdp.make_private(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]))
    optimizer = tfdp.DPKerasAdamOptimizer(l2_norm_clip=1.0, noise_multiplier=0.5)
    optimizer.build(model.trainable_variables)
    written = tf.train.Checkpoint(model=model, optimizer=optimizer).write(str(tmp_path / "c"))
    assert not is_legacy_dp_checkpoint(written, optimizer)


def test_an_old_checkpoint_into_an_optimizer_of_other_settings_is_refused_with_the_fix():
    model = tfdp.make_private(keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(2)]))
    optimizer = tfdp.DPKerasAdamOptimizer(l2_norm_clip=1.0, noise_multiplier=0.5)
    optimizer.build(model.trainable_variables)
    with pytest.raises(ValueError, match="build the optimizer with the run's class and settings"):
        optimizer.restore_legacy_checkpoint(os.path.join(FIXTURES, "legacy_sgd_ckpt", "ckpt-1"))
