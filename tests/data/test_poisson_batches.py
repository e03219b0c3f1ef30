"""tfdp.data.poisson_batches: batch sizes and per-example frequencies match Poisson sampling."""

import math

import numpy as np
import pytest

import tfdp.data
from tfdp.data import poisson_batches

N, BATCH, STEPS = 1000, 50, 400
Q = BATCH / N


def labels_per_step(dataset):
    return [y.numpy() for _, y in dataset]


@pytest.fixture(scope="module")
def sampled():
    x = np.arange(N, dtype=np.float32).reshape(N, 1) * 10.0
    y = np.arange(N, dtype=np.int64)
    return labels_per_step(poisson_batches(x, y, BATCH, num_steps=STEPS, insecure_reproducible_seed=7))


def test_batch_sizes_are_binomial(sampled):
    sizes = np.array([len(batch) for batch in sampled])
    assert len(sizes) == STEPS
    # Binomial(N, Q): mean N*Q; the mean of STEPS draws has std sqrt(N*Q*(1-Q)/STEPS).
    variance = N * Q * (1 - Q)
    assert abs(sizes.mean() - N * Q) < 5 * math.sqrt(variance / STEPS)
    # Sample variance: relative std about sqrt(2 / (STEPS - 1)). Fixed-size batches fail this.
    assert abs(sizes.var(ddof=1) / variance - 1) < 5 * math.sqrt(2 / (STEPS - 1))


def test_every_example_appears_with_frequency_q(sampled):
    counts = np.bincount(np.concatenate(sampled), minlength=N)
    assert len(counts) == N
    per_example_std = math.sqrt(STEPS * Q * (1 - Q))
    # Overall frequency.
    assert abs(counts.mean() / STEPS - Q) < 5 * per_example_std / math.sqrt(N) / STEPS
    # No example far from STEPS*Q (6 std over 1000 examples is a safe bound).
    assert np.all(np.abs(counts - STEPS * Q) < 6 * per_example_std)
    # Independent draws: counts spread like Binomial(STEPS, Q). A shuffled pipeline
    # (every example exactly STEPS*Q times) gives variance 0 and fails.
    assert abs(counts.var(ddof=1) / per_example_std**2 - 1) < 5 * math.sqrt(2 / (N - 1))
    # No example twice in one batch.
    assert all(len(np.unique(batch)) == len(batch) for batch in sampled)


def test_features_stay_paired_with_labels():
    x = np.arange(N, dtype=np.float32).reshape(N, 1) * 10.0
    y = np.arange(N, dtype=np.int64)
    for features, labels in poisson_batches(x, y, BATCH, num_steps=5, insecure_reproducible_seed=1):
        np.testing.assert_array_equal(features.numpy()[:, 0], labels.numpy() * 10.0)


def test_each_pass_draws_fresh_batches_and_the_seed_reproduces_them():
    y = np.arange(N)
    dataset = poisson_batches(np.zeros((N, 2)), y, BATCH, num_steps=4, insecure_reproducible_seed=3)
    first, second = labels_per_step(dataset), labels_per_step(dataset)
    assert any(not np.array_equal(a, b) for a, b in zip(first, second))
    again = labels_per_step(poisson_batches(np.zeros((N, 2)), y, BATCH, num_steps=4, insecure_reproducible_seed=3))
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    other = labels_per_step(poisson_batches(np.zeros((N, 2)), y, BATCH, num_steps=4, insecure_reproducible_seed=4))
    assert any(not np.array_equal(a, b) for a, b in zip(first, other))


def test_step_count_from_epochs_matches_the_accountant():
    dataset = poisson_batches(np.zeros((N, 1)), np.zeros(N), 64, epochs=3, insecure_reproducible_seed=0)
    assert int(dataset.cardinality()) == math.ceil(3 * N / 64)
    assert int(poisson_batches(np.zeros((N, 1)), None, 64, insecure_reproducible_seed=0).cardinality()) == math.ceil(N / 64)
    result = tfdp.compute_epsilon(N, 64, 1.0, epochs=3)
    assert result.steps == int(dataset.cardinality())


def test_without_labels_yields_features_only():
    batch = next(iter(poisson_batches(np.ones((N, 3)), None, 100, num_steps=1, insecure_reproducible_seed=0)))
    assert batch.shape[1] == 3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(batch_size=0), "batch_size"),
        (dict(batch_size=N + 1), "must not exceed"),
        (dict(num_steps=3, epochs=1), "at most one"),
        (dict(num_steps=0), "num_steps"),
        (dict(y=np.zeros(N - 1)), "examples on axis 0"),
    ],
)
def test_bad_input(kwargs, message):
    arguments = dict(x=np.zeros((N, 1)), y=np.zeros(N), batch_size=BATCH)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        poisson_batches(**arguments)


def test_dataset_record_delegates_here():
    data = tfdp.data.load_digits()
    batches = data.poisson_batches(32, insecure_reproducible_seed=0)
    assert int(batches.cardinality()) == math.ceil(data.num_train / 32)
