"""NaN/inf losses or gradients: a clear error by default (the step stays in the ledger), or
per-example skipping that keeps the step's DP guarantee and is counted."""

import numpy as np
import pytest
import keras
import tensorflow as tf

import tfdp

LOSS = keras.losses.SparseCategoricalCrossentropy(
    from_logits=True, reduction=None)


def _data(bad_rows=(3,)):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 5)).astype("float32")
    y = rng.integers(0, 3, size=8)
    for row in bad_rows:
        x[row, 0] = np.inf
    return x, y


def _model(fast):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="tanh"),
                              keras.layers.Dense(3)])
    return model, tfdp.make_private(model)


def _jacobian_path(fast):
    """Per-example microbatches send make_private's step through the whole-model Jacobian."""
    return {} if fast else {"num_microbatches": 8}


@pytest.mark.parametrize("fast", [False, True], ids=["jacobian_path", "fast_path"])
def test_non_finite_examples_stop_training_with_an_explanation_and_are_counted(fast):
    model, trained = _model(fast)
    optimizer = tfdp.DPKerasSGDOptimizer(l2_norm_clip=1.0, noise_multiplier=1.0,
                                         **_jacobian_path(fast))
    trained.compile(optimizer=optimizer, loss=LOSS)
    before = [v.numpy() for v in model.trainable_variables]
    x, y = _data()
    with pytest.raises(tf.errors.InvalidArgumentError, match="non-finite.*ledger"):
        trained.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert int(np.asarray(optimizer.noisy_steps)) == 1  # it touched the data: counted
    assert int(np.asarray(optimizer.iterations)) == 0  # but not applied
    for b, v in zip(before, model.trainable_variables):
        np.testing.assert_array_equal(b, v.numpy())


def test_skip_on_the_fast_path_zeroes_only_the_bad_examples_and_counts_them():
    fast = True
    x, y = _data(bad_rows=(3, 6))
    good = np.array([i not in (3, 6) for i in range(8)])

    def step(xs, ys, on_nonfinite):
        model, trained = _model(fast)
        before = [v.numpy() for v in model.trainable_variables]
        optimizer = tfdp.DPKerasSGDOptimizer(
            learning_rate=1.0, l2_norm_clip=0.5, noise_multiplier=0.0,
            expected_batch_size=8, on_nonfinite=on_nonfinite)
        trained.compile(optimizer=optimizer, loss=LOSS)
        trained.fit(xs, ys, batch_size=len(xs), epochs=1, verbose=0)
        return [b - v.numpy() for b, v in zip(before, model.trainable_variables)], optimizer

    skipped, optimizer = step(x, y, "skip")
    # The same step on the good examples only, divided by the same expected batch size.
    reference, _ = step(x[good], y[good], "raise")
    assert int(np.asarray(optimizer.skipped_examples)) == 2
    for s, r in zip(skipped, reference):
        assert np.all(np.isfinite(s))
        np.testing.assert_allclose(s, r, rtol=1e-5, atol=1e-7)


def test_on_nonfinite_is_validated_and_serialized():
    with pytest.raises(ValueError, match="on_nonfinite"):
        tfdp.DPKerasSGDOptimizer(l2_norm_clip=1.0, noise_multiplier=1.0, on_nonfinite="ignore")
    optimizer = tfdp.DPKerasSGDOptimizer(l2_norm_clip=1.0, noise_multiplier=1.0,
                                         on_nonfinite="skip")
    assert tfdp.DPKerasSGDOptimizer.from_config(optimizer.get_config()).on_nonfinite == "skip"


def test_skip_on_the_jacobian_path_keeps_the_step_finite_and_counts_what_it_skipped():
    # The batched Jacobian spreads an infinite input over every unit's row (inf * 0), so this
    # path may skip the whole batch; what it skips is counted and the update stays finite.
    x, y = _data(bad_rows=(3, 6))
    model, trained = _model(False)
    before = [v.numpy() for v in model.trainable_variables]
    optimizer = tfdp.DPKerasSGDOptimizer(
        learning_rate=1.0, l2_norm_clip=0.5, noise_multiplier=0.0, on_nonfinite="skip",
        **_jacobian_path(False))
    trained.compile(optimizer=optimizer, loss=LOSS)
    trained.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert 2 <= int(np.asarray(optimizer.skipped_examples)) <= 8
    assert int(np.asarray(optimizer.iterations)) == 1
    for b, v in zip(before, model.trainable_variables):
        assert np.all(np.isfinite(b - v.numpy()))
