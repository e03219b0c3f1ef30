"""tfdp.randomness.discrete: exact pmfs against frequencies, seeds, tf.function, arguments."""

import math

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from tfdp.randomness import discrete
from tfdp.randomness.discrete import (
    discrete_gaussian,
    discrete_laplace,
    float_error_bound,
    floored_laplace,
    geometric,
)

SEED = tf.constant([1, 2], tf.int64)
N = 200_000


def _chi2_pvalue(samples, support, pmf):
    """Chi-square p-value of integer `samples` against `pmf` (array over `support`, normalised
    here): bins with an expected count >= 10, the rest lumped into a left and a right tail bin."""
    pmf = np.asarray(pmf, np.float64) / np.sum(pmf)
    expected = len(samples) * pmf
    big = np.flatnonzero(expected >= 10)
    lo, hi = big[0], big[-1]
    counts = np.bincount(np.asarray(samples) - support[0], minlength=len(support))
    assert len(counts) == len(support), "samples outside the support"
    obs = [counts[:lo].sum(), *counts[lo : hi + 1], counts[hi + 1 :].sum()]
    exp = [expected[:lo].sum(), *expected[lo : hi + 1], expected[hi + 1 :].sum()]
    obs, exp = np.array(obs, np.float64), np.array(exp)
    keep = exp > 0  # a one-sided support has an empty left tail bin
    assert np.all(obs[~keep] == 0)
    return stats.chisquare(obs[keep], exp[keep]).pvalue


def _laplace_pmf(support, t):
    return np.exp(-np.abs(support) / t)


# ----------------------------------------------------------------------------------------------
# geometric


@pytest.mark.parametrize("scale_log2", [0, 1, 3])
def test_geometric_mean_and_variance_match_the_exact_ones(scale_log2):
    t = 2**scale_log2
    g = geometric([N], scale_log2, SEED).numpy().astype(np.float64)
    r = math.exp(-1 / t)  # P(G = g) = (1 - r) r**g
    mean, var = r / (1 - r), r / (1 - r) ** 2
    support = np.arange(0, 400 * t)
    pmf = (1 - r) * r**support
    fourth = np.sum(pmf * (support - mean) ** 4)
    assert abs(g.mean() - mean) < 5 * math.sqrt(var / N)
    assert abs(g.var() - var) < 5 * math.sqrt((fourth - var**2) / N)


@pytest.mark.parametrize("scale_log2", [0, 2])
def test_geometric_frequencies_match_the_pmf(scale_log2):
    t = 2**scale_log2
    g = geometric([N], scale_log2, tf.constant([3, 4], tf.int64)).numpy()
    assert g.min() >= 0
    support = np.arange(0, 88 * t)
    assert _chi2_pvalue(g, support, np.exp(-support / t)) > 1e-4


def test_geometric_at_a_large_scale_has_exponential_coarse_and_fine_parts():
    # G / t is Exp(1) up to 2**-20; (G mod t) / t, the U of G = U + t V, has density
    # proportional to exp(-x) on [0, 1).
    k = 20
    g = geometric([100_000], k, SEED).numpy()
    assert stats.kstest(g / 2.0**k, "expon").pvalue > 1e-4
    frac = (g % 2**k) / 2.0**k
    truncated = lambda x: -np.expm1(-x) / -math.expm1(-1.0)  # noqa: E731
    assert stats.kstest(frac, truncated).pvalue > 1e-4


def test_the_lazily_refined_uniform_is_uniform_below_two_to_the_minus_ten():
    # Only values below 2**-10 get a second random word: they must be uniform there too.
    words = discrete._words(1, 4_000_000, SEED)[0]
    w = discrete._uniform126(words, tf.constant([5, 6], tf.int64)).numpy()
    assert w.min() > 0 and w.max() <= 1
    small = w[w < 2.0**-10] * 2.0**10
    assert abs(len(small) - 4_000_000 / 1024) < 5 * math.sqrt(4_000_000 / 1024)
    assert stats.kstest(small, "uniform").pvalue > 1e-4
    # Below 2**-18 the second word's bits show: W * 2**63 is no integer or half-integer.
    tiny = w[w < 2.0**-18] * 2.0**63
    assert len(tiny) > 5 and np.all((tiny * 2) % 1 != 0)


def test_v_counts_the_thresholds_exp_minus_j_exactly():
    # V = #{j >= 1 : w <= exp(-j)}: exact at the thresholds, up to 87 at the smallest uniform.
    e1 = math.exp(-1)
    w = [1.0, np.nextafter(e1, 1), e1, math.exp(-2), math.exp(-44), math.exp(-87), 2.0**-126]
    v = discrete._exp_floor(tf.constant(w, tf.float64)).numpy()
    np.testing.assert_array_equal(v, [0, 0, 1, 2, 44, 87, 87])


# ----------------------------------------------------------------------------------------------
# discrete and floored Laplace


@pytest.mark.parametrize("scale_log2", [0, 1, 2])
def test_discrete_laplace_frequencies_match_the_pmf_and_are_symmetric(scale_log2):
    t = 2**scale_log2
    y = discrete_laplace([N], scale_log2, SEED).numpy()
    support = np.arange(-88 * t, 88 * t + 1)
    assert _chi2_pvalue(y, support, _laplace_pmf(support, t)) > 1e-4
    # Symmetry: positives and negatives are equally likely, and so are k and -k.
    positive, negative = np.sum(y > 0), np.sum(y < 0)
    assert stats.binomtest(int(positive), int(positive + negative)).pvalue > 1e-4
    assert _chi2_pvalue(-y, support, _laplace_pmf(support, t)) > 1e-4


@pytest.mark.parametrize("scale_log2", [0, 1, 2])
def test_floored_laplace_pmf_is_the_laplace_mass_of_each_unit_interval(scale_log2):
    t = 2**scale_log2
    y = floored_laplace([N], scale_log2, SEED).numpy()
    support = np.arange(-88 * t - 1, 88 * t + 1)
    # P(floor(L) = k) = integral over [k, k+1) of exp(-|x|/t) / (2t) dx.
    cdf = stats.laplace(scale=t).cdf
    pmf = cdf(support + 1.0) - cdf(support.astype(np.float64))
    assert abs(pmf.sum() - 1) < 1e-12
    assert _chi2_pvalue(y, support, pmf) > 1e-4
    # The floor shifts the mean by -1/2: E[floor(L)] = -1/2 exactly.
    assert abs(y.mean() + 0.5) < 5 * y.std() / math.sqrt(N)


# ----------------------------------------------------------------------------------------------
# discrete Gaussian


@pytest.mark.parametrize("sigma_log2", [0, 1, 2])
def test_discrete_gaussian_frequencies_match_the_pmf(sigma_log2):
    s = 2**sigma_log2
    y = discrete_gaussian([N], sigma_log2, SEED).numpy()
    support = np.arange(-45 * s, 45 * s + 1)
    pmf = np.exp(-(support.astype(np.float64) ** 2) / (2 * s * s))  # normalised numerically
    assert _chi2_pvalue(y, support, pmf) > 1e-4


def test_discrete_gaussian_at_a_large_scale_is_a_standard_normal_times_s():
    k = 20
    y = discrete_gaussian([100_000], k, SEED).numpy() / 2.0**k
    assert abs(y.std() - 1) < 0.01
    assert stats.kstest(y, "norm").pvalue > 1e-4


def test_the_largest_scales_do_not_overflow():
    for sampler in (geometric, discrete_laplace, floored_laplace, discrete_gaussian):
        y = sampler([20_000], 40, SEED).numpy()
        assert np.all(np.abs(y) < 88 * 2**40), sampler.__name__
        assert 0.5 < y.std() / 2**40 < 2, sampler.__name__


# ----------------------------------------------------------------------------------------------
# Integers, seeds, graphs, arguments

SAMPLERS = [geometric, discrete_laplace, floored_laplace, discrete_gaussian]


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_outputs_are_int64_of_the_requested_shape(sampler):
    for shape in ([], [0], [3, 0, 2], [4, 5]):
        y = sampler(shape, 3, SEED)
        assert y.dtype == tf.int64
        assert y.shape == tf.TensorShape(shape)
    assert sampler(tf.TensorShape([2, 3]), 3, SEED).shape == (2, 3)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_same_seed_same_draws_and_different_seeds_different_draws(sampler):
    a = sampler([1000], 10, tf.constant([1, 2], tf.int64)).numpy()
    b = sampler([1000], 10, tf.constant([1, 2], tf.int64)).numpy()
    c = sampler([1000], 10, tf.constant([1, 3], tf.int64)).numpy()
    np.testing.assert_array_equal(a, b)
    assert np.mean(a != c) > 0.9


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_draws_are_uncorrelated_across_positions(sampler):
    y = sampler([100_000], 4, SEED).numpy().astype(np.float64)
    bound = 5 / math.sqrt(len(y))
    assert abs(np.corrcoef(y[:-1], y[1:])[0, 1]) < bound  # neighbours
    assert abs(np.corrcoef(y, y[::-1])[0, 1]) < bound  # mirrored halves
    half = len(y) // 2
    assert abs(np.corrcoef(y[:half], y[half:])[0, 1]) < bound * math.sqrt(2)  # halves


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_the_global_random_state_plays_no_part(sampler):
    tf.random.set_seed(1)
    a = sampler([500], 5, SEED).numpy()
    tf.random.set_seed(2)
    tf.random.uniform([10])
    np.random.seed(3)
    np.testing.assert_array_equal(a, sampler([500], 5, SEED).numpy())


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_a_tf_function_gives_the_eager_draws(sampler):
    @tf.function
    def draw(seed, shape):
        return sampler(shape, 6, seed)

    eager = sampler([7, 300], 6, SEED).numpy()
    # The shape as a tensor: unknown at tracing time in the loop's sizes.
    np.testing.assert_array_equal(draw(SEED, tf.constant([7, 300])).numpy(), eager)
    np.testing.assert_array_equal(draw(SEED, tf.constant([7, 300])).numpy(), eager)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_bad_arguments_raise_value_errors_naming_them(sampler):
    name = "sigma_log2" if sampler is discrete_gaussian else "scale_log2"
    for bad in (-1, 41, 2.0, 2.5, True, "3", None):
        with pytest.raises(ValueError, match=name):
            sampler([3], bad, SEED)
    for bad in (tf.constant([1, 2, 3], tf.int64), tf.constant([1.0, 2.0]), "seed"):
        with pytest.raises(ValueError, match="seed"):
            sampler([3], 2, bad)
    for bad in ([-1], [2.5], [True], tf.TensorShape([None, 2])):
        with pytest.raises(ValueError, match="shape"):
            sampler(bad, 2, SEED)


def test_float_error_bound_and_the_exp_it_assumes():
    eta = float_error_bound()
    assert 0 < eta <= 2.0**-40
    # The bound assumes tf.exp within 3 ulps of exp on the acceptance arguments' range.
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.prec = 120
    x = np.concatenate([np.linspace(0, 1, 1001), np.linspace(0, 90, 1001)])
    approx = tf.exp(tf.constant(-x, tf.float64)).numpy()
    exact = np.array([float(mpmath.exp(-mpmath.mpf(v))) for v in x])
    assert np.max(np.abs(approx - exact) / np.spacing(exact)) <= 3
