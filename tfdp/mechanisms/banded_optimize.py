"""Banded Toeplitz strategies optimized for a run's length (the prefix-sum workload's error).

Objective (JAX-privacy's `matrix_factorization.toeplitz.loss`, which its
`optimize_banded_toeplitz` minimizes with L-BFGS from the same start): for the prefix-sum
workload A (T x T lower-triangular ones) and the strategy C, the noise on the prefix sums
is A C^{-1} z; its expected squared error at step t is ||row t of A C^{-1}||^2 (unit noise
variance). The loss is the mean over t ("mean", the default) or the largest ("max", the
last step's) of these, times the squared sensitivity ||c||^2, which makes it invariant to
the coefficients' scale, so the result is normalized to ||c|| = 1 afterwards. At a fixed
privacy budget the noise std is proportional to the sensitivity, so this is the error of
the released prefix sums per unit of the noise multiplier.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
from scipy import optimize as scipy_optimize
from scipy import signal

from tfdp._validation import check_choice, check_positive_int
from tfdp.mechanisms.banded_mf import (
    banded_toeplitz_coefficients,
    check_coefficients,
    normalize_coefficients,
)

REDUCTIONS = ("mean", "max")


def _solve(coef: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """C^{-1} rhs for the lower-triangular banded Toeplitz C of `coef`: an IIR filter."""
    return signal.lfilter([1.0], coef, rhs)


def error_and_gradient(coefficients, num_steps: int,
                       reduction: str = "mean") -> Tuple[float, np.ndarray]:
    """The loss of the module docstring and its exact gradient in the coefficients.

    x = C^{-1} 1 holds the Toeplitz coefficients of A C^{-1}, so the error at step t is
    sum_{i<=t} x_i^2 and the loss is f = sum_i weight_i x_i^2 (weight (T - i) / T for
    "mean", 1 for "max"), times ||c||^2. Differentiating C x = 1 gives
    df/dc_k = -sum_{i>=k} y_i x_{i-k} with y = C^{-T} (2 weight x); C^{-T} is C^{-1}
    applied to the reversed vector, reversed (C is Toeplitz).
    """
    coef = check_coefficients(coefficients)
    num_steps = check_positive_int("num_steps", num_steps)
    check_choice("reduction", reduction, REDUCTIONS)
    x = _solve(coef, np.ones(num_steps))
    weight = (np.ones(num_steps) if reduction == "max"
              else (num_steps - np.arange(num_steps)) / num_steps)
    error = float(np.sum(weight * x ** 2))
    y = _solve(coef, (2.0 * weight * x)[::-1])[::-1]
    grad_error = np.array([-np.dot(y[k:], x[:num_steps - k]) for k in range(coef.size)])
    sens2 = float(np.sum(coef[:num_steps] ** 2))
    grad_sens2 = 2.0 * coef * (np.arange(coef.size) < num_steps)
    return error * sens2, grad_error * sens2 + error * grad_sens2


_DIVERGED = 1e3  # log-loss of a strategy whose recurrence diverges: far above any real one


def _log_loss(tail: np.ndarray, num_steps: int, reduction: str) -> Tuple[float, np.ndarray]:
    """log of the loss at c = (1, tail...) and its gradient in `tail`."""
    with np.errstate(over="ignore", invalid="ignore"):
        loss, grad = error_and_gradient(np.concatenate([[1.0], tail]), num_steps, reduction)
    if not (np.isfinite(loss) and np.all(np.isfinite(grad))) or loss <= 0:
        return _DIVERGED, np.zeros_like(tail)
    return float(np.log(loss)), grad[1:] / loss


def optimize_banded_toeplitz(bands: int, num_steps: int, reduction: str = "mean",
                             max_iterations: int = 500) -> np.ndarray:
    """b banded Toeplitz coefficients minimizing the prefix sums' error over T steps.

    Starts from `banded_toeplitz_coefficients(bands)` (as JAX-privacy does) and runs
    SciPy's L-BFGS-B on the log of `error_and_gradient` (c_0 fixed at 1, the
    loss being scale-invariant; the other coefficients in [-1, 1]); returns whichever of the
    start and the optimum has the smaller loss, so the result is never worse than the
    default. A few milliseconds per evaluation at T in the thousands.

    Args:
      bands: b, the number of nonzero diagonals (b <= T).
      num_steps: T, the run's number of steps.
      reduction: "mean" (mean squared error of the prefix sums over the run) or "max"
        (the largest, the last step's).
      max_iterations: L-BFGS-B's iteration limit.

    Returns:
      float64 coefficients of shape (bands,) with L2 norm 1 (largest column norm 1).
    """
    start = banded_toeplitz_coefficients(bands, num_steps)
    check_choice("reduction", reduction, REDUCTIONS)
    if bands == 1:
        return start
    # The loss is scale-invariant: fix c_0 = 1 and search the other coefficients in
    # [-1, 1] on the loss's logarithm (gradients of order 1, so the first line-search
    # step stays near the start); an unstable C (its recurrence diverges) scores `_DIVERGED`.
    result = scipy_optimize.minimize(
        _log_loss, start[1:] / start[0], args=(num_steps, reduction), jac=True,
        method="L-BFGS-B", bounds=[(-1.0, 1.0)] * (bands - 1),
        options={"maxiter": int(max_iterations), "ftol": 1e-15, "gtol": 1e-12})
    best = np.concatenate([[1.0], result.x])
    if not _log_loss(best[1:], num_steps, reduction)[0] < _log_loss(
            start[1:] / start[0], num_steps, reduction)[0]:
        best = start
    return normalize_coefficients(best)
