"""Noise on a grid: the released noisy sum leaks nothing through its low-order bits.

The attack (Mironov, CCS 2012; Jin et al., S&P 2022) reads the last mantissa bits of a
released float: with textbook noise, `1 + n` rounds (ties to even) where `0 + n` does not,
so the bits' distribution tells a sum of 0 from a neighbouring sum of 1 (one example's
clipped gradient) with certainty as samples accumulate. On the grid, the released value is
a function of an integer whose distribution only shifts.
"""

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

from tfdp.queries import GaussianSumQuery, LaplaceSumQuery
from tfdp.randomness import grid

N = 200_000  # coordinates of one release: N independent noise draws


def _released(query, value, seed):
    sample = [tf.fill([N], tf.constant(value, tf.float32))]
    result, _, _ = query.get_noised_result_with_seed(
        sample, query.initial_global_state(), tf.constant([seed, 11], tf.int64))
    return result[0].numpy()


def _odd_share(values, low, high):
    """Share of the float32 outputs in [low, high) whose last mantissa bit is 1, and their count."""
    inside = values[(values >= low) & (values < high)].astype(np.float32)
    return float(np.mean(inside.view(np.int32) & 1)), inside.size


QUERIES = {
    "gaussian": lambda safe: GaussianSumQuery(1.0, 1.0, floating_point_safe=safe),
    "laplace": lambda safe: LaplaceSumQuery(1.0, 1.0, floating_point_safe=safe),
}


@pytest.mark.parametrize("mechanism", sorted(QUERIES))
def test_the_low_bits_tell_neighbours_apart_with_textbook_noise_and_not_on_the_grid(mechanism):
    gaps = {}
    for safe in (False, True):
        query = QUERIES[mechanism](safe)
        share_0, count_0 = _odd_share(_released(query, 0.0, 1), 2.0, 3.0)
        share_1, count_1 = _odd_share(_released(query, 1.0, 2), 2.0, 3.0)
        assert min(count_0, count_1) > 3000
        # Five standard errors of a difference of two shares.
        gaps[safe] = (abs(share_0 - share_1),
                      5 * np.sqrt(0.25 / count_0 + 0.25 / count_1))
    textbook, on_grid = gaps[False], gaps[True]
    assert textbook[0] > 0.1  # the textbook release gives the sum away
    assert on_grid[0] < on_grid[1]  # the grid release does not, at 5 standard errors


def test_grid_noise_has_the_mechanisms_distribution():
    gaussian = _released(QUERIES["gaussian"](True), 0.0, 3)
    assert abs(gaussian.std() - 1.0) < 5 / np.sqrt(2 * N)
    assert scipy.stats.kstest(gaussian, "norm").pvalue > 1e-4
    laplace = _released(QUERIES["laplace"](True), 0.0, 4)
    assert abs(np.abs(laplace).mean() - 1.0) < 0.02
    # floor(Laplace) on a grid far finer than the scale: Laplace(0, 1) to the test's eyes.
    assert scipy.stats.kstest(laplace, "laplace").pvalue > 1e-4


def test_the_grid_keeps_the_sensitivity_at_the_noise_over_sigma():
    for norm, d in (("l2", 10_000), ("l1", 10_000), ("l2", 10**8)):
        gamma, k = grid.grid_for(2.0, 1.3, d, norm)
        rounding = np.sqrt(d) if norm == "l2" else d
        # C / gamma + rounding, the sensitivity on the grid, is the noise scale over sigma.
        assert 2.0 / gamma + rounding == pytest.approx(2.0**k / 1.3, rel=1e-12)
        assert 2.0**k >= 1.3 * 2.0**30  # the noise spans at least 2**30 grid units
    with pytest.raises(ValueError, match="noise multiplier"):
        grid.grid_for(1.0, 0.0, 10, "l2")
    epsilon, delta = grid.excess_bound(10**4, 10**4, "l2")
    assert epsilon == pytest.approx(2e8 * (2.0**-40 + 4e-16)) and 0 < delta < 1e-15
