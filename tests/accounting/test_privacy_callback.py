"""PrivacyCallback: logged epsilon equals compute_epsilon on the optimizer's ledger; budget stop."""

import csv
import math

import numpy as np
import pytest
import keras
import tensorflow as tf
from sklearn.datasets import load_digits

import tfdp
from tfdp.data import poisson_batches

N, BATCH, SIGMA, DELTA = 300, 32, 1.1, 1e-5
STEPS_PER_EPOCH = math.ceil(N / BATCH)  # 10, for both Poisson and model.fit batches


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    return (x[:N] / 16.0).astype(np.float32), y[:N].astype(np.int64)


def tiny_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.layers.Input((64,)), keras.layers.Dense(10)])


def private_model():
    """tiny_model wrapped for DP training (Keras 3 optimizers only see averaged gradients)."""
    return tfdp.make_private(tiny_model())


def per_example_loss():
    return keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction=None
    )


class LedgerRecorder(keras.callbacks.Callback):
    """Copies the optimizer's counters at each epoch end (runs after PrivacyCallback)."""

    def __init__(self):
        super().__init__()
        self.ledgers = []

    def on_epoch_end(self, epoch, logs=None):
        opt = self.model.optimizer
        self.ledgers.append(
            dict(
                iterations=int(opt.iterations.numpy()),
                noisy=int(opt.noisy_steps.numpy()),
                dropped=int(opt.dropped_steps.numpy()),
                largest=int(opt.largest_batch_size.numpy()),
            )
        )


def compile_private(model, **dp_arguments):
    optimizer = tfdp.DPKerasSGDOptimizer(
        l2_norm_clip=1.0, noise_multiplier=SIGMA, learning_rate=0.5, **dp_arguments
    )
    model.compile(optimizer=optimizer, loss=per_example_loss(), metrics=["accuracy"])
    return optimizer


def test_logged_epsilon_equals_compute_epsilon_on_the_ledger(digits):
    x, y = digits
    model = private_model()
    compile_private(model, expected_batch_size=BATCH)
    callback, recorder = tfdp.PrivacyCallback(N, DELTA), LedgerRecorder()
    history = model.fit(
        poisson_batches(x, y, BATCH, insecure_reproducible_seed=0), epochs=2, callbacks=[callback, recorder], verbose=0
    )
    logged = history.history["epsilon"]
    assert len(logged) == 2 and "epsilon_noisy_steps_only" not in history.history
    for epsilon, ledger in zip(logged, recorder.ledgers):
        reference = tfdp.compute_epsilon(
            N, BATCH, SIGMA, steps=ledger["iterations"] + ledger["dropped"], delta=DELTA,
            noisy_steps=ledger["noisy"],
        )
        assert epsilon == pytest.approx(reference.epsilon, rel=1e-12)
    assert recorder.ledgers[-1]["iterations"] == 2 * STEPS_PER_EPOCH
    assert logged[0] < logged[1]
    assert callback.result.epsilon == logged[-1]
    assert "Poisson" in callback.result.statement


def test_random_schedule_logs_both_figures_from_the_ledger(digits):
    x, y = digits
    model = private_model()
    compile_private(
        model, noise_schedule="random", noise_probability=0.5, on_skip="release", insecure_reproducible_seed=3,
        expected_batch_size=BATCH,
    )
    callback, recorder = tfdp.PrivacyCallback(N, DELTA), LedgerRecorder()
    history = model.fit(
        poisson_batches(x, y, BATCH, insecure_reproducible_seed=0), epochs=2, callbacks=[callback, recorder], verbose=0
    )
    ledger = recorder.ledgers[-1]
    assert 0 < ledger["noisy"] < ledger["iterations"]  # some steps released without noise
    assert all(math.isinf(e) for e in history.history["epsilon"])
    reference = tfdp.compute_epsilon(
        N, BATCH, SIGMA, steps=ledger["iterations"], delta=DELTA, noise_schedule="random",
        noise_probability=0.5, noisy_steps=ledger["noisy"],
    )
    assert history.history["epsilon_noisy_steps_only"][-1] == pytest.approx(
        reference.epsilon_noisy_steps_only, rel=1e-12
    )
    assert math.isfinite(history.history["epsilon_noisy_steps_only"][-1])


def test_dropped_steps_with_shuffled_batches_and_csv_logger(digits, tmp_path):
    x, y = digits
    model = private_model()
    compile_private(model, noise_schedule="random", noise_probability=0.5, on_skip="drop", insecure_reproducible_seed=5)
    path = tmp_path / "log.csv"
    callback, recorder = tfdp.PrivacyCallback(N, DELTA, sampling="shuffle"), LedgerRecorder()
    model.fit(
        x, y, batch_size=BATCH, epochs=2, verbose=0,
        callbacks=[callback, recorder, keras.callbacks.CSVLogger(str(path))],
    )
    ledger = recorder.ledgers[-1]
    assert ledger["dropped"] > 0 and ledger["largest"] == BATCH
    reference = tfdp.compute_epsilon(
        N, BATCH, SIGMA, steps=ledger["iterations"] + ledger["dropped"], delta=DELTA,
        noise_schedule="random", noise_probability=0.5, on_skip="drop", sampling="shuffle",
        noisy_steps=ledger["noisy"],
    )
    assert math.isfinite(reference.epsilon)
    with open(path) as handle:
        rows = list(csv.DictReader(handle))
    assert float(rows[-1]["epsilon"]) == pytest.approx(reference.epsilon, rel=1e-6)


def test_target_epsilon_stops_before_the_budget_is_exceeded(digits):
    x, y = digits
    # The target lies between the epsilon of 1 and of 2 epochs of Poisson steps.
    after_one = tfdp.compute_epsilon(N, BATCH, SIGMA, steps=STEPS_PER_EPOCH, delta=DELTA).epsilon
    after_two = tfdp.compute_epsilon(N, BATCH, SIGMA, steps=2 * STEPS_PER_EPOCH, delta=DELTA).epsilon
    target = (after_one + after_two) / 2
    model = private_model()
    compile_private(model, expected_batch_size=BATCH)
    callback = tfdp.PrivacyCallback(N, DELTA, target_epsilon=target, verbose=0)
    history = model.fit(
        poisson_batches(x, y, BATCH, insecure_reproducible_seed=0), epochs=5, callbacks=[callback], verbose=0
    )
    assert len(history.history["epsilon"]) == 1
    assert history.history["epsilon"][-1] <= target
    assert callback.stopped_epoch == 0


def test_generous_target_lets_training_finish(digits):
    x, y = digits
    model = private_model()
    compile_private(model, expected_batch_size=BATCH)
    callback = tfdp.PrivacyCallback(N, DELTA, target_epsilon=1e3, verbose=0)
    history = model.fit(
        poisson_batches(x, y, BATCH, insecure_reproducible_seed=0), epochs=2, callbacks=[callback], verbose=0
    )
    assert len(history.history["epsilon"]) == 2 and callback.stopped_epoch is None


def test_non_dp_optimizer_is_refused(digits):
    x, y = digits
    model = tiny_model()
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(True))
    with pytest.raises(ValueError, match="tfdp DP optimizer"):
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0,
                  callbacks=[tfdp.PrivacyCallback(N, DELTA)])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_examples=0), "num_examples"),
        (dict(delta=1.0), "delta"),
        (dict(target_epsilon=-1.0), "target_epsilon"),
        (dict(sampling="fixed"), "sampling"),
    ],
)
def test_bad_arguments(kwargs, message):
    arguments = dict(num_examples=N, delta=DELTA)
    arguments.update(kwargs)
    num_examples = arguments.pop("num_examples")
    with pytest.raises(ValueError, match=message):
        tfdp.PrivacyCallback(num_examples, **arguments)


def test_fast_path_model_feeds_the_same_ledger(digits):
    x, y = digits
    model = private_model()
    compile_private(model, expected_batch_size=BATCH)
    callback, recorder = tfdp.PrivacyCallback(N, DELTA), LedgerRecorder()
    history = model.fit(
        poisson_batches(x, y, BATCH, insecure_reproducible_seed=1), epochs=1, callbacks=[callback, recorder], verbose=0
    )
    ledger = recorder.ledgers[-1]
    assert ledger["iterations"] == STEPS_PER_EPOCH and ledger["noisy"] == STEPS_PER_EPOCH
    reference = tfdp.compute_epsilon(N, BATCH, SIGMA, steps=STEPS_PER_EPOCH, delta=DELTA)
    assert history.history["epsilon"][-1] == pytest.approx(reference.epsilon, rel=1e-12)


def test_poisson_assumption_with_fixed_batches_is_refused(digits):
    # model.fit's shuffled fixed-size batches are not Poisson sampled: the Poisson figure
    # would be no guarantee, so fit stops before the first step.
    x, y = digits
    model = private_model()
    optimizer = compile_private(model)
    with pytest.raises(ValueError, match="sampling='shuffle'"):
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0,
                  callbacks=[tfdp.PrivacyCallback(N, DELTA)])
    assert int(optimizer.iterations) == 0


def test_poisson_accounting_of_an_update_divided_by_the_realized_batch_is_refused(digits):
    x, y = digits
    model = private_model()
    optimizer = compile_private(model)  # no expected_batch_size: divides by the realized batch
    for callback in (tfdp.PrivacyCallback(N, DELTA), tfdp.PrivacyCallback(N, DELTA, batch_size=BATCH)):
        with pytest.raises(ValueError, match="expected_batch_size.*sampling='shuffle'"):
            model.fit(tfdp.data.poisson_batches(x, y, BATCH), epochs=1, verbose=0,
                      callbacks=[callback])
    assert int(optimizer.iterations.numpy()) == 0  # refused before any step
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="realized batch size"):
        tfdp.accounting.epsilon_from_ledger(optimizer, N, batch_size=BATCH)
    shuffle = tfdp.accounting.epsilon_from_ledger(optimizer, N, sampling="shuffle")
    assert shuffle.epsilon == pytest.approx(tfdp.compute_epsilon(
        N, BATCH, SIGMA, steps=STEPS_PER_EPOCH, delta=DELTA, sampling="shuffle").epsilon, rel=1e-12)


def test_zero_noise_optimizer_logs_infinite_epsilon(digits):
    x, y = digits
    model = private_model()
    optimizer = tfdp.DPKerasSGDOptimizer(l2_norm_clip=1.0, noise_multiplier=0.0, learning_rate=0.5)
    model.compile(optimizer=optimizer, loss=per_example_loss())
    callback = tfdp.PrivacyCallback(N, DELTA, sampling="shuffle")
    history = model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[callback])
    assert math.isinf(history.history["epsilon"][-1])
    assert "NO differential-privacy guarantee" in callback.result.statement
