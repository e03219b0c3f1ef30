"""The DP optimizer with mechanism="banded_mf": correlated noise across steps, restarts, refusals."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdp
from tfdp.mechanisms.banded_mf import banded_toeplitz_coefficients, strategy_matrix

DIM, STEPS, BANDS, SIGMA, CLIP, BATCH = 40000, 6, 3, 1.5, 2.0, 4


def _optimizer(**kwargs):
    return tfdp.optimizers.DPKerasSGDOptimizer(
        mechanism="banded_mf", bands=BANDS, l2_norm_clip=CLIP, noise_multiplier=SIGMA,
        expected_batch_size=BATCH, learning_rate=1.0, **kwargs)


def _noise_of_steps(optimizer, variable, steps):
    """The noise of each step: with a zero clipped sum, SGD's update is -lr * noise / B."""
    noises = []
    for _ in range(steps):
        before = variable.numpy().copy()
        grads = optimizer.privatize_clipped_sum([tf.zeros([DIM])], 1, 1)
        optimizer.apply(grads, [variable])
        noises.append((before - variable.numpy()) * BATCH)
    return np.stack(noises)  # [steps, DIM]


def test_noise_has_the_strategys_covariance_across_steps():
    variable = keras.Variable(tf.zeros([DIM]))
    optimizer = _optimizer()
    optimizer.build([variable])
    noise = _noise_of_steps(optimizer, variable, STEPS)
    # Every coordinate is an independent draw of the T-vector C^-1 z, z ~ N(0, (sigma C)^2 I).
    inverse = np.linalg.inv(strategy_matrix(banded_toeplitz_coefficients(BANDS), STEPS))
    expected = (SIGMA * CLIP) ** 2 * inverse @ inverse.T
    empirical = noise @ noise.T / DIM
    # Independent noise would give a diagonal matrix: the off-diagonal terms are large here.
    assert abs(expected[1, 0]) > 0.3 * expected[0, 0]
    np.testing.assert_allclose(empirical, expected, atol=0.05 * expected[0, 0])


def test_a_restore_restarts_the_recurrence_and_repeats_no_noise():
    variable = keras.Variable(tf.zeros([DIM]))
    optimizer = _optimizer()
    optimizer.build([variable])
    first = _noise_of_steps(optimizer, variable, 3)
    optimizer.iterations.assign(1)  # as a restore of a checkpoint taken after step 1
    again = _noise_of_steps(optimizer, variable, 2)
    # The step after the restore starts from zero history: its noise is z_1 / c_0 alone,
    # uncorrelated with the noise before; and no step's noise repeats an earlier one.
    coef0 = banded_toeplitz_coefficients(BANDS)[0]
    scale = SIGMA * CLIP / coef0
    assert abs(np.mean(again[0] * first[0])) < 0.03 * scale ** 2
    np.testing.assert_allclose(np.var(again[0]), scale ** 2, rtol=0.05)
    for old in first:
        assert not np.allclose(old, again[0])
    assert int(optimizer.banded_noise.steps.numpy()) == 2


def test_banded_optimizer_reports_its_bands_and_refusals():
    optimizer = _optimizer()
    assert optimizer.dp_settings["mechanism"] == "banded_mf"
    assert optimizer.dp_settings["bands"] == BANDS
    config = optimizer.get_config()
    assert config["bands"] == BANDS
    rebuilt = type(optimizer).from_config(config)
    assert rebuilt.dp_settings["bands"] == BANDS
    with pytest.raises(ValueError, match="bands"):
        tfdp.optimizers.DPKerasSGDOptimizer(mechanism="banded_mf", l2_norm_clip=1.0,
                                            noise_multiplier=1.0)
    with pytest.raises(ValueError, match="num_microbatches"):
        _optimizer(num_microbatches=2)
    with pytest.raises(ValueError, match="noise_schedule='random'"):
        tfdp.optimizers.DPKerasSGDOptimizer(
            mechanism="banded_mf", bands=2, l2_norm_clip=1.0, noise_multiplier=1.0,
            noise_schedule="random", noise_probability=0.5)
    with pytest.raises(ValueError, match="floating_point_safe"):
        _optimizer(floating_point_safe_noise=True)
    with pytest.raises(ValueError, match="banded_mf"):
        tfdp.optimizers.DPKerasSGDOptimizer(mechanism="gaussian", bands=2, l2_norm_clip=1.0,
                                            noise_multiplier=1.0)
    # Nothing of the recurrence is an optimizer variable (saved files never hold it).
    variable = keras.Variable(tf.zeros([3]))
    optimizer.build([variable])
    names = [v.name for v in optimizer.variables]
    assert not any("banded" in name for name in names)
