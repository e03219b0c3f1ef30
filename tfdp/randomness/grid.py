"""Floating-point-safe noise on a clipped sum: round it onto a grid, add integer noise, scale back.

Textbook noise `v + n` in floating point leaks `v` through the low-order bits of the result
(Mironov, CCS 2012; Jin et al., S&P 2022). Here every leaf of the clipped sum is put on an
integer grid of spacing `gamma` (k = round(v / gamma), in float64, where integers up to
2**53 are exact), integer noise z from `tfdp.randomness.discrete` is added, and the released
value is gamma * (k + z): a function of the integer k + z alone, whatever `v`'s low bits.

The grid is chosen so that the mechanism the accountant composes is exactly the one the
user asked for (noise multiplier sigma, clip C):

* Rounding moves each coordinate of a sum by at most 1/2 grid unit, so two neighbouring
  sums (one example's clipped gradient apart) differ on the grid by at most C / gamma + d**(1/2)
  in L2 norm and C / gamma + d in L1 norm (d: the number of coordinates). With the noise's
  scale on the grid a power of two, 2**K, gamma is set so that this sensitivity is exactly
  2**K / sigma: the noise-to-sensitivity ratio is sigma, as for the continuous mechanism.
  The noise in real units is sigma * C * (1 + a relative 2**-30 or less): the same noise.
* Laplace: `floored_laplace` is exactly floor(L) for L ~ Laplace(0, 2**K), so
  k + z = floor(k + L) is a post-processing of the continuous Laplace mechanism on the
  integer vector k: its `LaplaceDpEvent(sigma)` accounting holds as it stands.
* Gaussian: `discrete_gaussian`'s pmf is within a factor 1 +- 4e-16 of that of round(N(0, s^2))
  wherever it is reachable (s = 2**K >= 2**30; Canonne, Kamath and Steinke 2020, with a
  Poisson-summation and sinh bound), and k + round(N) = round(k + N) is a post-processing of
  the continuous Gaussian mechanism: its `GaussianDpEvent(sigma)` accounting holds up to that.
* Floating point inside the samplers changes each output probability by a relative
  `float_error_bound()` at most, outside a far tail (below 7.1e-23 per Laplace coordinate,
  4e-27 per Gaussian one, unreachable outputs included). Per step the pmf of the
  d-coordinate release is within a factor (1 +- eta)^d of the exact one outside that tail
  (eta: that bound, plus the Gaussian's 4e-16), so T steps add at most 2 T d eta to epsilon
  and T d times the tail to delta (e.g. 2e-4 and 7e-12 for d = 1e6 parameters, T = 1e5
  steps): `excess_bound` gives both; the statement quotes them.
"""

from __future__ import annotations

import math
from typing import Callable, List, Tuple

import tensorflow as tf

from tfdp.randomness import discrete

# The noise scale on the grid is at least 2**30 units: the rounding is negligible beside it.
_MARGIN_LOG2 = 30
# A sum's coordinates on the grid must stay exact in float64 (below 2**53).
_EXACT = 2.0**53


def grid_for(clip: float, noise_multiplier: float, num_coordinates: int, norm: str
             ) -> Tuple[float, int]:
    """(gamma, K): the grid spacing and the noise scale's log2 on it, for one release.

    `norm` is "l2" (Gaussian: rounding adds sqrt(d) to the sensitivity) or "l1" (Laplace:
    it adds d). K is the smallest power of two above sigma * (rounding + 2**30), and gamma
    makes the sensitivity on the grid, C / gamma + rounding, equal 2**K / sigma.
    """
    if noise_multiplier <= 0:
        raise ValueError("Noise on a grid needs a noise multiplier > 0.")
    rounding = math.sqrt(num_coordinates) if norm == "l2" else float(num_coordinates)
    k = math.ceil(math.log2(noise_multiplier * (rounding + 2.0**_MARGIN_LOG2)))
    if k > discrete.MAX_LOG2:
        raise ValueError(
            f"The noise on a grid would need a scale of 2**{k} grid units (noise multiplier "
            f"{noise_multiplier:g}, {num_coordinates} coordinates); the samplers stop at "
            f"2**{discrete.MAX_LOG2}. Use a smaller noise multiplier or fewer parameters.")
    gamma = clip / (2.0**k / noise_multiplier - rounding)
    return gamma, k


def noised_on_grid(leaves: List[tf.Tensor], seed: tf.Tensor, *, clip: float,
                   noise_multiplier: float, norm: str) -> List[tf.Tensor]:
    """Every leaf of a clipped sum rounded onto one grid, integer noise added, scaled back.

    `seed` ([2] int64) keys one draw of integer noise for all the leaves' coordinates
    together: one sampler loop per step instead of one per leaf (on a model of many small
    leaves, the per-leaf loops' fixed cost was most of the step's). The grid is shared by all
    leaves (the sensitivity is a norm over all of them), so shapes must be static.
    """
    sizes = [leaf.shape.num_elements() for leaf in leaves]
    if any(size is None for size in sizes):
        raise ValueError("Noise on a grid needs leaves of static shape (the grid depends on "
                         "the number of coordinates).")
    if not leaves:
        return []
    gamma, k = grid_for(clip, noise_multiplier, sum(sizes), norm)
    sample: Callable = discrete.discrete_gaussian if norm == "l2" else discrete.floored_laplace
    # The draw needs only the seed and the static shapes: free of the caller's control
    # dependencies, a graph draws it while the gradients are computed.
    with tf.control_dependencies(None):
        noise = tf.cast(sample([sum(sizes)], k, seed), tf.float64)
    flat = tf.concat([tf.reshape(tf.cast(leaf, tf.float64), [-1]) for leaf in leaves], axis=0)
    on_grid = tf.round(flat / gamma)
    check = tf.debugging.assert_less(
        tf.reduce_max(tf.abs(on_grid)), tf.constant(_EXACT / 4, tf.float64),
        message="tfdp: a clipped sum is too large for its noise grid; is the clip right?")
    with tf.control_dependencies([check]):  # nothing noised is released past the check
        released = (on_grid + noise) * gamma
    return [tf.cast(tf.reshape(part, leaf.shape), leaf.dtype)
            for leaf, part in zip(leaves, tf.split(released, sizes))]


# The samplers' relative error per output probability (`discrete.float_error_bound`).
ETA = discrete.float_error_bound()
# Probability per coordinate of the far tail where the relative bound does not hold (the
# samplers' unreachable outputs included): `tfdp.randomness.discrete`'s module docstring.
_TAIL = {"l2": 4e-27, "l1": 7.1e-23}


def excess_bound(num_coordinates: int, steps: int, norm: str) -> Tuple[float, float]:
    """(epsilon excess, delta excess): the most the samplers' arithmetic adds over `steps`.

    2 * steps * d * eta to epsilon, with eta the samplers' relative error bound (plus, for
    the Gaussian, 4e-16 between the discrete Gaussian and the rounded continuous one), and
    steps * d * tail to delta.
    """
    eta = discrete.float_error_bound() + (4e-16 if norm == "l2" else 0.0)
    return (2.0 * steps * num_coordinates * eta, steps * num_coordinates * _TAIL[norm])
