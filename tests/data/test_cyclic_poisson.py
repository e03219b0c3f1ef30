"""Cyclic Poisson sampling's core: folds from (key, index) alone, and the per-step mask."""

import numpy as np
import pytest
import tensorflow as tf

from tfdp.data.cyclic_poisson import (
    cyclic_poisson_folds,
    cyclic_poisson_mask,
    cyclic_sampling_probability,
    fold_key,
)


def _agree_when_an_example_is_added(fold_fn, n):
    return np.array_equal(fold_fn(n)[:n], fold_fn(n + 1)[:n])


def test_adding_an_example_moves_no_other_examples_fold():
    key = fold_key()
    for n in (1, 7, 1000):
        assert _agree_when_an_example_is_added(lambda m: cyclic_poisson_folds(m, 4, key), n)
    # The check has teeth: an equal, position-based split moves many examples' folds.
    assert not _agree_when_an_example_is_added(lambda m: np.arange(m) * 4 // m, 1000)


def test_folds_are_uniform_and_depend_on_the_key():
    n, bands = 40000, 8
    folds = cyclic_poisson_folds(n, bands, fold_key())
    assert folds.min() == 0 and folds.max() == bands - 1
    counts = np.bincount(folds, minlength=bands)
    # Each count is Binomial(n, 1/b): within 5 standard deviations of n / b.
    assert np.all(np.abs(counts - n / bands) < 5 * np.sqrt(n * (1 / bands) * (1 - 1 / bands)))
    other = cyclic_poisson_folds(n, bands, fold_key())
    assert 0.8 / bands < np.mean(folds == other) < 1.2 / bands  # independent keys: chance agreement
    seeded = fold_key(insecure_reproducible_seed=5)
    assert seeded == fold_key(insecure_reproducible_seed=5) != fold_key(insecure_reproducible_seed=6)
    np.testing.assert_array_equal(cyclic_poisson_folds(50, 3, seeded),
                                  cyclic_poisson_folds(50, 3, seeded))


def test_step_mask_samples_only_its_fold_at_rate_q():
    n, bands, batch = 40000, 4, 500
    folds = cyclic_poisson_folds(n, bands, fold_key(insecure_reproducible_seed=1))
    q = cyclic_sampling_probability(n, batch, bands)
    assert q == batch * bands / n
    sizes = []
    for step in range(8):
        mask = cyclic_poisson_mask(folds, step, bands, q, tf.constant([step, 99], tf.int64)).numpy()
        assert set(folds[mask]) == {step % bands}
        members = np.sum(folds == step % bands)
        # Binomial(members, q): within 5 standard deviations.
        assert abs(mask.sum() - members * q) < 5 * np.sqrt(members * q * (1 - q))
        sizes.append(mask.sum())
    assert abs(np.mean(sizes) - batch) < 5 * np.sqrt(batch / 8)


def test_more_bands_than_the_data_allows_is_refused():
    with pytest.raises(ValueError, match="Use at most 3 bands, or a smaller batch size"):
        cyclic_sampling_probability(1000, 300, 4)
    with pytest.raises(ValueError, match="fold key"):
        cyclic_poisson_folds(10, 2, "not a key")
