"""Banded lower-triangular Toeplitz strategies for DP matrix factorization (DP-MF / BandMF).

A b-banded strategy C (T x T) is lower-triangular Toeplitz with coefficients
c_0..c_{b-1} on its first b diagonals: C[t, s] = c_{t-s} for 0 <= t - s < b. DP-MF adds
the noise w = C^{-1} z (z i.i.d. Gaussian) to the clipped gradient sums: the model then
sees the prefix sums of (g + w), i.e. A C^{-1} (C g + z), the matrix mechanism for the
prefix-sum workload A with the factorization A = (A C^{-1}) C. The noise follows from a
recurrence over the last b-1 outputs, c_0 w_t = z_t - sum_{i=1}^{b-1} c_i w_{t-i}.

Normalization: the coefficients are scaled to ||c||_2 = 1. Column s of C holds
c_0..c_{min(b, T-s)-1}, so every column has L2 norm <= 1 and the first T-b+1 columns
exactly 1: the largest column norm, the strategy's sensitivity per participation when an
example takes part at most once every b steps (then the columns it touches are
orthogonal), is 1. This is JAX-privacy's convention for banded Toeplitz strategies
(`matrix_factorization.toeplitz.optimize_banded_toeplitz` returns ||c|| = 1).

Construction (`banded_toeplitz_coefficients`): the Taylor coefficients of (1 - x)^{-1/2},
c_i = binom(2i, i) / 4^i, the square root of the prefix-sum matrix (A = C C) that
Fichtenberger, Henzinger and Upadhyay (ICML 2023) introduced and Dvijotham et al.
(arXiv:2404.16706) proved optimal among Toeplitz strategies for the max error,
truncated to b bands and normalized: JAX-privacy's `ColumnNormalizedBanded.default` and
the starting point of its optimizer. `optimize_banded_toeplitz` (its objective in
`tfdp.mechanisms.banded_optimize`) improves it for a given run length.

    banded_toeplitz_coefficients(bands, num_steps=None) -> (bands,) normalized coefficients
    optimize_banded_toeplitz(bands, num_steps, reduction="mean") -> (bands,) tuned to T steps
    strategy_matrix(coefficients, num_steps) -> T x T lower-triangular banded Toeplitz C
    banded_sensitivity(coefficients, num_steps) -> largest column norm (per participation)
    minsep_sensitivity(coefficients, num_steps, min_sep, max_participations=None)
    noise_from_recurrence(coefficients, z) -> C^{-1} z (NumPy reference of the recurrence)
    prefix_error(coefficients, num_steps, reduction="mean") -> the optimizer's objective

The noise itself is drawn in TensorFlow by `tfdp.randomness.BandedNoise`; the accounting
(cyclic Poisson sampling) is `tfdp.accounting.banded_mf`.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from tfdp._validation import check_positive_int


def check_coefficients(coefficients) -> np.ndarray:
    """The coefficients as a 1-D float64 array with c_0 > 0 and finite entries; raises otherwise."""
    coef = np.asarray(coefficients, dtype=np.float64)
    if coef.ndim != 1 or coef.size < 1:
        raise ValueError(
            "A banded strategy's `coefficients` are a 1-D array c_0..c_{b-1} (b >= 1 bands), "
            f"got shape {coef.shape}.")
    if not np.all(np.isfinite(coef)):
        raise ValueError("The strategy's `coefficients` must be finite numbers.")
    if coef[0] <= 0:
        raise ValueError(
            f"The strategy's diagonal coefficient c_0 must be > 0 (C must be invertible), "
            f"got {coef[0]!r}.")
    return coef


def normalize_coefficients(coefficients) -> np.ndarray:
    """`coefficients / ||coefficients||_2`: the strategy's largest column norm becomes 1."""
    coef = check_coefficients(coefficients)
    return coef / np.linalg.norm(coef)


def sqrt_prefix_coefficients(count: int) -> np.ndarray:
    """The first `count` Taylor coefficients of (1 - x)^{-1/2}: binom(2i, i) / 4^i.

    The lower-triangular Toeplitz matrix they define is the square root of the
    prefix-sum matrix; computed as the running product prod_{k<=i} (2k - 1) / (2k).
    """
    count = check_positive_int("count", count)
    k = np.arange(1, count, dtype=np.float64)
    return np.concatenate([[1.0], np.cumprod((2 * k - 1) / (2 * k))])


def banded_toeplitz_coefficients(bands: int, num_steps: Optional[int] = None) -> np.ndarray:
    """The default b-banded strategy: the prefix sums' Toeplitz square root, truncated, normalized.

    Args:
      bands: b, the number of nonzero diagonals (b = 1 is DP-SGD's independent noise).
      num_steps: the run's length T, only checked (b <= T); the construction does not
        depend on it. For coefficients tuned to T, use `optimize_banded_toeplitz`.

    Returns:
      float64 array of shape (bands,), positive, decreasing, with L2 norm 1.
    """
    bands = check_positive_int("bands", bands)
    if num_steps is not None:
        num_steps = check_positive_int("num_steps", num_steps)
        if bands > num_steps:
            raise ValueError(
                f"`bands` ({bands}) must not exceed `num_steps` ({num_steps}): a strategy "
                "for T steps has at most T diagonals.")
    return normalize_coefficients(sqrt_prefix_coefficients(bands))


def strategy_matrix(coefficients, num_steps: int) -> np.ndarray:
    """The T x T lower-triangular banded Toeplitz matrix C[t, s] = c_{t-s} (0 <= t - s < b)."""
    coef = check_coefficients(coefficients)
    num_steps = check_positive_int("num_steps", num_steps)
    matrix = np.zeros((num_steps, num_steps))
    for lag, value in enumerate(coef[:num_steps]):
        idx = np.arange(num_steps - lag)
        matrix[idx + lag, idx] = value
    return matrix


def column_norms(coefficients, num_steps: int) -> np.ndarray:
    """The L2 norm of each of C's T columns (the last b-1 are truncated by the matrix's end)."""
    coef = check_coefficients(coefficients)
    num_steps = check_positive_int("num_steps", num_steps)
    prefix = np.sqrt(np.cumsum(coef ** 2))  # prefix[k] = ||c_0..c_k||
    lengths = np.minimum(coef.size, num_steps - np.arange(num_steps))  # entries in column s
    return prefix[lengths - 1]


def banded_sensitivity(coefficients, num_steps: int) -> float:
    """The largest column L2 norm of the T x T strategy: its sensitivity per participation.

    When each example takes part at most once every b steps (b >= the number of bands),
    the columns one example touches are orthogonal, and the cyclic-Poisson accounting
    composes one Gaussian of this sensitivity per participation. The first column is
    never truncated (when b <= T), so this is the norm of all b coefficients: 1 after
    `normalize_coefficients`.
    """
    return float(np.max(column_norms(coefficients, num_steps)))


def minsep_sensitivity(coefficients, num_steps: int, min_sep: int,
                       max_participations: Optional[int] = None) -> float:
    """The sensitivity of C when one example takes part up to k times, >= min_sep steps apart.

    Without amplification (every participating example in a known step), the L2
    sensitivity of the whole release: sqrt(max over participation patterns of the sum of
    squared column norms), exact for min_sep >= bands (the columns are then orthogonal).
    k defaults to the most the pattern allows, ceil(T / min_sep). The dynamic program is
    JAX-privacy's `max_participation_for_linear_fn` (arXiv:2306.08153, Algorithm 3).
    """
    coef = check_coefficients(coefficients)
    min_sep = check_positive_int("min_sep", min_sep)
    if min_sep < coef.size:
        raise ValueError(
            f"`min_sep` ({min_sep}) must be >= the number of bands ({coef.size}): "
            "otherwise one example's columns overlap and this formula understates the "
            "sensitivity.")
    squared = column_norms(coef, num_steps) ** 2
    most = -(-num_steps // min_sep)
    count = most if max_participations is None else min(
        check_positive_int("max_participations", max_participations), most)
    best = np.zeros(num_steps + min_sep)
    for _ in range(count):  # best[s]: the largest sum over the columns from s on
        best[:-min_sep] = squared + best[min_sep:]
        best = np.maximum.accumulate(best[::-1])[::-1]
    return float(np.sqrt(best[0]))


def noise_from_recurrence(coefficients, z) -> np.ndarray:
    """w = C^{-1} z by the recurrence c_0 w_t = z_t - sum_{i=1}^{b-1} c_i w_{t-i} (NumPy reference).

    Args:
      coefficients: c_0..c_{b-1}.
      z: array of shape (T, ...): the i.i.d. noise of T steps.

    Returns:
      w, float64 of z's shape, equal to np.linalg.solve(strategy_matrix(c, T), z).
    """
    coef = check_coefficients(coefficients)
    z = np.asarray(z, dtype=np.float64)
    if z.ndim < 1:
        raise ValueError("`z` needs the steps on axis 0, shape (T, ...).")
    w = np.zeros_like(z)
    for t in range(z.shape[0]):
        inner = sum(coef[i] * w[t - i] for i in range(1, min(coef.size, t + 1)))
        w[t] = (z[t] - inner) / coef[0]
    return w


def prefix_error(coefficients, num_steps: int, reduction: str = "mean") -> float:
    """Expected squared error of the prefix sums per unit noise variance, times sensitivity^2.

    With w = C^{-1} z, z ~ N(0, I), the prefix sum after step t carries the noise
    sum_{s<=t} w_s = (A C^{-1} z)_t, of variance ||row t of A C^{-1}||^2. "mean" averages
    this over t = 1..T, "max" takes its largest value (the last step's, for Toeplitz C);
    either is multiplied by the squared sensitivity max_s ||C[:, s]||^2, which makes the
    figure invariant to the coefficients' scale. This is JAX-privacy's
    `toeplitz.loss(coef, n, reduction_fn=jnp.mean | jnp.max)`.
    """
    from tfdp.mechanisms.banded_optimize import error_and_gradient  # scipy only here

    coef = check_coefficients(coefficients)
    return float(error_and_gradient(coef, num_steps, reduction)[0])


def optimize_banded_toeplitz(bands: int, num_steps: int, reduction: str = "mean",
                             max_iterations: int = 500) -> np.ndarray:
    """b coefficients minimizing `prefix_error` over T steps, normalized (see banded_optimize)."""
    from tfdp.mechanisms import banded_optimize  # scipy only here

    return banded_optimize.optimize_banded_toeplitz(bands, num_steps, reduction, max_iterations)
