"""BandedNoise: the streaming C^{-1} z noise of banded DP-MF, drawn from the secret key.

The covariance check is shown to reject independent noise and a wrong recurrence, so it
can fail; the strategy's numbers come from tfdp.mechanisms.banded_mf, itself checked
against JAX-privacy in tests/mechanisms/test_banded_mf.py.
"""

import os

import numpy as np
import pytest
import tensorflow as tf

from tfdp.mechanisms.banded_mf import (
    banded_toeplitz_coefficients,
    noise_from_recurrence,
    strategy_matrix,
)
from tfdp.randomness import SecretKey
from tfdp.randomness.correlated import BandedNoise

RUNS = 200_000  # independent runs, one per coordinate of a [RUNS] variable
SIGMA = 1.3


def _run(noise, key, steps, start=0):
    """`steps` draws of `noise` as a [steps, RUNS] array, seeds from `key` at ledger steps."""
    draw = tf.function(lambda seed: noise.draw(seed, SIGMA))
    return np.stack([draw(key.step_seed(tf.constant(start + t, tf.int64)))[0].numpy()
                     for t in range(steps)])


def _strategy_covariance(coef, steps):
    inverse = np.linalg.inv(strategy_matrix(coef, steps))
    return SIGMA ** 2 * inverse @ inverse.T


def _covariance_matches(samples, expected, z_scores=6.0):
    """True when the empirical covariance of samples [T, N] is within `z_scores` standard errors."""
    n = samples.shape[1]
    empirical = samples @ samples.T / n
    diag = np.diag(expected)
    stderr = np.sqrt((np.outer(diag, diag) + expected ** 2) / n)
    return bool(np.all(np.abs(empirical - expected) <= z_scores * stderr))


def test_noise_covariance_is_the_strategys():
    coef = banded_toeplitz_coefficients(3)
    noise = BandedNoise(coef, [[RUNS]])
    samples = _run(noise, SecretKey("noise", insecure_reproducible_seed=7), 8)
    expected = _strategy_covariance(coef, 8)
    assert _covariance_matches(samples, expected)
    # The same check rejects i.i.d. noise and a recurrence with the coefficients reversed.
    rng = np.random.default_rng(0)
    assert not _covariance_matches(SIGMA * rng.normal(size=(8, RUNS)), expected)
    assert not _covariance_matches(
        noise_from_recurrence(coef[::-1], SIGMA * rng.normal(size=(8, RUNS))), expected)


def test_one_band_is_independent_noise():
    noise = BandedNoise([2.0], [[RUNS]])  # normalized: c_0 = 1
    samples = _run(noise, SecretKey("noise", insecure_reproducible_seed=8), 6)
    assert _covariance_matches(samples, SIGMA ** 2 * np.eye(6))
    z = tf.constant([0.5, -1.5])
    np.testing.assert_array_equal(BandedNoise([2.0], [[2]]).next_noise([z])[0].numpy(), z.numpy())


def test_next_noise_is_the_recurrence_inside_tf_function():
    coef = [1.0, 0.7, 0.2, 0.1]
    shapes = [[3], [2, 2]]
    noise = BandedNoise(coef, shapes)
    rng = np.random.default_rng(3)
    z = [rng.normal(size=(9, *shape)).astype(np.float32) for shape in shapes]
    step = tf.function(noise.next_noise)
    out = [step([z[0][t], z[1][t]]) for t in range(9)]
    normalized = np.asarray(coef) / np.linalg.norm(coef)
    for i in range(2):
        np.testing.assert_allclose(np.stack([o[i].numpy() for o in out]),
                                   noise_from_recurrence(normalized, z[i]), rtol=1e-5, atol=1e-5)
    assert int(noise.steps.numpy()) == 9


def test_reset_restarts_the_recurrence_block_diagonal():
    coef = banded_toeplitz_coefficients(3)
    noise = BandedNoise(coef, [[RUNS]])
    key = SecretKey("noise", insecure_reproducible_seed=9)
    first = _run(noise, key, 4)
    noise.reset()
    assert int(noise.steps.numpy()) == 0
    second = _run(noise, key, 4, start=4)
    block = _strategy_covariance(coef, 4)
    block_diagonal = np.block([[block, np.zeros((4, 4))], [np.zeros((4, 4)), block]])
    samples = np.concatenate([first, second])
    assert _covariance_matches(samples, block_diagonal)
    assert not _covariance_matches(samples, _strategy_covariance(coef, 8))
    # Right after a reset the output is z / c_0, as at step 0.
    z = tf.constant([1.0, -2.0, 3.0])
    small = BandedNoise(coef, [[3]])
    small.next_noise([tf.ones([3])])
    small.reset()
    np.testing.assert_allclose(small.next_noise([z])[0].numpy(), z.numpy() / coef[0], rtol=1e-6)


def test_consecutive_and_resumed_steps_never_repeat_noise():
    coef = banded_toeplitz_coefficients(4)
    key = SecretKey("noise", insecure_reproducible_seed=10)
    noise = BandedNoise(coef, [[1000]])
    before = _run(noise, key, 6)
    # A resumed process: a new key object from the same (insecure) seed, its counter back at
    # 0, the recurrence restarted; the ledger's step count continues.
    resumed = BandedNoise(coef, [[1000]])
    after = _run(resumed, SecretKey("noise", insecure_reproducible_seed=10), 6, start=6)
    everything = np.concatenate([before, after])
    for s in range(12):
        for t in range(s + 1, 12):
            assert not np.any(everything[s] == everything[t]), (s, t)
            assert abs(np.corrcoef(everything[s], everything[t])[0, 1]) < 0.9


def test_buffers_are_never_checkpointed(tmp_path):
    module = tf.Module()
    module.weight = tf.Variable([1.0, 2.0])
    module.noise = BandedNoise(banded_toeplitz_coefficients(3), [[2]], name="banded_noise")
    module.noise.next_noise([tf.ones([2])])
    assert [v.name for v in module.variables] == ["Variable:0"]
    path = tf.train.Checkpoint(module=module).save(os.path.join(tmp_path, "ckpt"))
    names = [name for name, _ in tf.train.list_variables(path)]
    assert not any("banded" in name or "noise" in name for name in names), names


def test_wrong_inputs_are_refused():
    with pytest.raises(ValueError, match="c_0 > 0"):
        BandedNoise([0.0, 1.0], [[2]])
    with pytest.raises(ValueError, match="holds 1 variables, got 2"):
        BandedNoise([1.0, 0.5], [[2]]).next_noise([tf.ones([2]), tf.ones([2])])
    with pytest.raises(ValueError, match="fully defined"):
        BandedNoise([1.0, 0.5], [[None]])
