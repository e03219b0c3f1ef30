"""Floating-point-safe DP noise: integer samplers in TensorFlow ops, keyed by a stateless seed.

Textbook floating-point Laplace or Gaussian noise leaks the noiseless value through the low-order
bits of its outputs (Mironov, CCS 2012; Jin et al., S&P 2022): the set of floats reachable from
x + noise depends on x. These samplers return integers instead (noise on a grid, which the caller
scales), and float64 enters only through Bernoulli acceptances: an acceptance probability is
computed from exact integers and compared with a uniform built exactly from random bits. Nothing
is an inverse CDF of the output, so every output probability is the exact one up to a tiny
*relative* error (`float_error_bound`).

Randomness: each function takes `seed`, an int64 tensor of shape [2], and uses only
`tf.random.stateless_*` ops (sub-seeds by `stateless_split`; round i of a rejection loop folds in
i). Same seed, same draws, eagerly and inside a `tf.function`.

Scales are powers of two, t = 2**scale_log2 and s = 2**sigma_log2 with exponents in [0, 40], so
every integer handled stays below 2**47 in magnitude: no int64 overflow, exact float64 conversions.

Small probabilities are decided by uniforms of 126 random bits, which resolve events down to
2**-126 (a 53- or 64-bit uniform would give a *relative* error of 100% on an event of probability
2**-60). The relative guarantee therefore holds except in a far tail of total probability below
1e-22 (a geometric part V >= 51; discrete Gaussian |k| > 10.8 s), where the error of each
acceptance is instead absolute, below 2**-63. Outputs are unreachable beyond 88 t (geometric,
discrete and floored Laplace) and beyond about 14.2 s (discrete Gaussian).
"""

from __future__ import annotations

import math
import operator
from typing import Callable, Sequence, Tuple, Union

import tensorflow as tf

__all__ = [
    "MAX_LOG2",
    "discrete_gaussian",
    "discrete_laplace",
    "float_error_bound",
    "floored_laplace",
    "geometric",
]

# Largest allowed scale_log2 / sigma_log2: outputs then stay below 88 * 2**40 < 2**47.
MAX_LOG2 = 40

ShapeLike = Union[Sequence[int], tf.TensorShape, tf.Tensor]

_MASK53 = (1 << 53) - 1
_MASK63 = (1 << 63) - 1
# A rejection round that still needs r values draws (r + 5 sqrt(r) + 16) / rate candidates: five
# standard deviations above the mean need (a 0.5% surplus at r = 1e6, where "+10%" would waste
# 10%), so a second round is rare (about 3e-7) and only ever small.
_MARGIN_SDS = 5.0
_MARGIN_EXTRA = 16.0


def float_error_bound() -> float:
    """A conservative bound eta on the relative error of any single output probability.

    Every output probability p' of the samplers in this module satisfies |p' - p| <= eta * p
    against the exact pmf p, for every output outside the far tail described in the module
    docstring (total probability below 1e-22; there the error is absolute, below 2**-63 per
    acceptance).

    Returns 2**-40 (about 9.1e-13).
    """
    # Budget, in units of u = 2**-53 (the float64 unit roundoff; an ulp is at most 2u relative),
    # assuming tf.exp within 3 ulps (tests/randomness/test_discrete.py checks it against mpmath;
    # 2 ulps measured on CPU) and Python's math.exp within 1 ulp:
    #  * U (geometric): acceptance exp(-U/t) >= 1/e, exp error 6u, 53-bit grid e*u -> 9u; the pmf
    #    of U is a ratio of such probabilities -> 18u.
    #  * V from 126 bits: thresholds exp(-j) within 2u, the uniform's float64 rounding within 5u
    #    (and monotone), grid 2**-126 -> P(V = j) within 16u for j <= 50. Geometric: 34u;
    #    discrete / floored Laplace (two geometrics, renormalised): under 70u.
    #  * discrete Gaussian, coin exp(-x), x = U/s + d*d/2 rounded twice: x * 2u from the argument
    #    (x <= 49.5 for |k| <= 10.8 s), 6u from exp, 5u from the uniform, grid 2**-126 <= u p;
    #    V from 63 bits: P(V = j) within 2u + 2**-63 e**(j+1) / (1 - 1/e) <= 95u for j <= 10.
    #    Together about 210u; renormalising at most doubles it -> 420u < 2**-44.
    # 2**-40 leaves a factor 40 for a less accurate exp (another device or library version).
    return 2.0**-40


def geometric(shape: ShapeLike, scale_log2: int, seed: tf.Tensor) -> tf.Tensor:
    """Integers g >= 0 with P(G = g) proportional to exp(-g / t), t = 2**scale_log2 (int64).

    G = U + t * V with U and V independent:
      * U on {0, ..., t-1} with P(U = u) proportional to exp(-u / t): the low scale_log2 bits of a
        random word (exactly uniform, no modulo bias), accepted with probability exp(-u / t) >= 1/e
        by comparing a 53-bit uniform; rejected candidates are redrawn.
      * V with P(V >= j) = exp(-j): the number of thresholds exp(-1), exp(-2), ... at or above a
        126-bit uniform W in (0, 1] (V = floor(-ln W) without rounding the logarithm); V <= 87.
    P(U + t V = g) = exp(-u / t) exp(-v) / const = exp(-g / t) / const.

    Args:
      shape: output shape.
      scale_log2: integer in [0, 40]; the scale is t = 2**scale_log2.
      seed: int64 tensor of shape [2] for the stateless random ops.

    Returns:
      An int64 tensor of `shape`.
    """
    k, seed, shape, n = _arguments("scale_log2", scale_log2, seed, shape)
    return tf.reshape(_geometric_flat(n, k, seed), shape)


def discrete_laplace(shape: ShapeLike, scale_log2: int, seed: tf.Tensor) -> tf.Tensor:
    """Integers k with P(k) proportional to exp(-|k| / t), t = 2**scale_log2 (int64).

    The difference G1 - G2 of two independent `geometric` draws of scale t.

    Args:
      shape: output shape.
      scale_log2: integer in [0, 40]; the scale is t = 2**scale_log2.
      seed: int64 tensor of shape [2] for the stateless random ops.

    Returns:
      An int64 tensor of `shape`.
    """
    k, seed, shape, n = _arguments("scale_log2", scale_log2, seed, shape)
    return tf.reshape(_discrete_laplace_flat(n, k, seed), shape)


def floored_laplace(shape: ShapeLike, scale_log2: int, seed: tf.Tensor) -> tf.Tensor:
    """Integers distributed exactly as floor(L), L ~ continuous Laplace(0, t), t = 2**scale_log2.

    Returns `discrete_laplace` (scale t) minus an independent fair bit. Why this is floor(L):
    L = E1 - E2 with E1, E2 independent exponentials of mean t. The floor G_i and the fractional
    part F_i of an exponential are independent (memorylessness), G_i being `geometric` of scale
    t. Then floor(E1 - E2) = G1 - G2 + floor(F1 - F2) = G1 - G2 - [F1 < F2], and [F1 < F2] is a
    fair coin independent of G1 and G2. Adding floored_laplace noise to an integer vector is
    therefore a post-processing (a floor) of the continuous Laplace mechanism of scale t, and
    inherits its guarantee.

    Args:
      shape: output shape.
      scale_log2: integer in [0, 40]; the scale is t = 2**scale_log2.
      seed: int64 tensor of shape [2] for the stateless random ops.

    Returns:
      An int64 tensor of `shape`.
    """
    k, seed, shape, n = _arguments("scale_log2", scale_log2, seed, shape)
    seed_laplace, seed_bit = _split(seed, 2)
    bit = tf.bitwise.bitwise_and(_words(1, n, seed_bit)[0], 1)
    return tf.reshape(_discrete_laplace_flat(n, k, seed_laplace) - bit, shape)


def discrete_gaussian(shape: ShapeLike, sigma_log2: int, seed: tf.Tensor) -> tf.Tensor:
    """Integers k with P(k) proportional to exp(-k**2 / (2 s**2)), s = 2**sigma_log2 (int64).

    Rejection sampling of Canonne, Kamath and Steinke 2020 ("The Discrete Gaussian for
    Differential Privacy", Algorithm 3): a discrete Laplace proposal Y of scale t = s, accepted
    with probability exp(-(|Y| - s**2/t)**2 / (2 s**2)) = exp(-d*d/2), d = (|Y| - s) / s exact in
    float64, so that P(Y = k) * accept(k) is proportional to exp(-(k**2 + s**2) / (2 s**2)).

    The proposal is drawn as in their Algorithm 2, +-G with a fair sign and (-, 0) discarded, and
    the two inner rejections (the U of G = U + s V, see `geometric`, and the discard) are merged
    into the Gaussian one: a candidate (U uniform, V, sign) is accepted with the single
    probability exp(-U/s - d*d/2). That is one loop, one coin per candidate, about 48% of
    candidates accepted for every s. Here V comes from a 63-bit uniform (V <= 43): that resolves
    P(V = j) to a relative 2**-46 for j <= 10, which covers |k| <= 10.8 s, and the coin's 126 bits
    make larger |k| unreachable anyway.

    Relation to the rounded Gaussian: P(round(N(0, s**2)) = k) = P(k) * I(k) * (1 + theta), with
    I(k) = integral over w in [-1/2, 1/2] of exp(-(2 k w + w**2) / (2 s**2)), which lies between
    exp(-1/(8 s**2)) and sinh(x)/x, x = |k| / (2 s**2); and 0 <= theta <= 2.0001 exp(-2 pi**2 s**2)
    compares the normalisers (Poisson summation). For |k| <= 45 s, sinh(x)/x <= 1 + 85/s**2, so
    the two pmfs agree within a factor 1 +- 8.1e-5 for s >= 2**10, and within 1 +- 4e-16 only for
    s >= 2**29. Outputs beyond about 14.2 s are unreachable here (their acceptance probability
    is below the 2**-126 resolution of the coin); their probability under round(N(0, s**2)) is
    below 1e-45. `float_error_bound` covers |k| <= 10.8 s; the rest has probability < 4e-27.

    Args:
      shape: output shape.
      sigma_log2: integer in [0, 40]; the scale is s = 2**sigma_log2.
      seed: int64 tensor of shape [2] for the stateless random ops.

    Returns:
      An int64 tensor of `shape`.
    """
    k, seed, shape, n = _arguments("sigma_log2", sigma_log2, seed, shape)
    s = 1 << k

    def draw(m, round_seed):
        seed_words, seed_refine = _split(round_seed, 2)
        first, v_word, coin = tf.unstack(_words(3, m, seed_words))
        u = tf.bitwise.bitwise_and(first, s - 1)  # exactly uniform on {0, ..., s-1}
        negative = first < 0  # the top bit, unused by u (sigma_log2 <= 40)
        g = u + tf.bitwise.left_shift(_exp_floor(_uniform63(v_word)), k)  # |Y| < 44 s < 2**46
        # Exact: integers below 2**53 scaled by a power of two. Only d*d and the sum round.
        u_over_s = tf.cast(u, tf.float64) * 2.0**-k
        d = tf.cast(g - s, tf.float64) * 2.0**-k
        accept = _uniform126(coin, seed_refine) <= tf.exp(-(u_over_s + 0.5 * (d * d)))
        accept &= ~(negative & tf.equal(g, 0))
        return tf.where(negative, -g, g), accept

    # P(accept) = (1 - 1/e) / (2 s) * exp(-1/2) * sum_k exp(-k**2 / (2 s**2)), the sum being
    # s sqrt(2 pi) up to a relative 1e-8 (Poisson summation): 0.4805 for every s. It only sizes
    # the rounds.
    rate = -math.expm1(-1.0) * math.exp(-0.5) * math.sqrt(2 * math.pi) / 2
    return tf.reshape(_fill(n, rate, seed, draw), shape)


# ----------------------------------------------------------------------------------------------
# Building blocks.


def _geometric_flat(n: tf.Tensor, k: int, seed: tf.Tensor) -> tf.Tensor:
    """n geometric draws of scale 2**k (see `geometric`), flat."""
    t = 1 << k
    seed_u, seed_v = _split(seed, 2)

    def draw_u(m, round_seed):
        bits, coin = tf.unstack(_words(2, m, round_seed))
        u = tf.bitwise.bitwise_and(bits, t - 1)  # exactly uniform on {0, ..., t-1}
        # exp(-u/t) >= 1/e, so the 53-bit grid of the coin is a relative error below e 2**-53.
        # u / t is exact (u < 2**40, power-of-two scaling).
        accept = _uniform53(coin) < tf.exp(tf.cast(u, tf.float64) * -(2.0**-k))
        return u, accept

    # The mean of exp(-u/t) over the t values of u: the acceptance rate of the U loop.
    rate = 1.0 if k == 0 else -math.expm1(-1.0) / (t * -math.expm1(-1.0 / t))
    u = _fill(n, rate, seed_u, draw_u)
    seed_words, seed_refine = _split(seed_v, 2)
    w = _uniform126(_words(1, n, seed_words)[0], seed_refine)
    return u + tf.bitwise.left_shift(_exp_floor(w), k)


def _discrete_laplace_flat(n: tf.Tensor, k: int, seed: tf.Tensor) -> tf.Tensor:
    """n discrete Laplace draws of scale 2**k as G1 - G2: the 2n geometrics come from one loop."""
    g = _geometric_flat(2 * n, k, seed)
    return g[:n] - g[n:]


def _exp_floor(w: tf.Tensor) -> tf.Tensor:
    """V = #{j >= 1 : w <= exp(-j)}, so P(V >= j) = P(W <= exp(-j)) = exp(-j) for a uniform W.

    This is floor(-ln w) without the rounding error of a logarithm: each event V >= j compares w
    with exp(-j), correctly rounded to within an ulp by Python's math.exp. The table stops at the
    last exp(-j) at or above 2**-126, the smallest value of `_uniform`.
    """
    v_max = int(126 * math.log(2))  # 87
    thresholds = tf.constant([math.exp(-j) for j in range(v_max, 0, -1)], tf.float64)  # ascending
    below = tf.searchsorted(thresholds, w, side="left", out_type=tf.int64)  # #{j : exp(-j) < w}
    return v_max - below


def _fill(
    n: tf.Tensor,
    rate: float,
    seed: tf.Tensor,
    draw: Callable[[tf.Tensor, tf.Tensor], Tuple[tf.Tensor, tf.Tensor]],
) -> tf.Tensor:
    """The first n accepted candidates, in order, of rounds of `draw(m, round_seed)`.

    `draw` returns m i.i.d. candidate values and a mask of the accepted ones; round i uses
    fold_in(seed, i). The round sizes depend on counts only, never on values, so the kept values
    are i.i.d. from the target distribution.
    """

    def needed(out):
        return n - tf.size(out, out_type=tf.int64)

    def body(i, out):
        r = tf.cast(needed(out), tf.float64)
        m = tf.math.ceil((r + _MARGIN_SDS * tf.sqrt(r) + _MARGIN_EXTRA) / rate)
        round_seed = tf.random.experimental.stateless_fold_in(seed, i)
        values, accept = draw(tf.cast(m, tf.int64), round_seed)
        return i + 1, tf.concat([out, tf.boolean_mask(values, accept)], axis=0)

    _, out = tf.while_loop(
        lambda i, out: needed(out) > 0,
        body,
        (tf.constant(0, tf.int64), tf.zeros([0], tf.int64)),
        shape_invariants=(tf.TensorShape([]), tf.TensorShape([None])),
    )
    return out[:n]


def _words(rows: int, m: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """[rows, m] independent uniform 64-bit words (int64), from one stateless op."""
    shape = tf.stack([tf.constant(rows, tf.int64), tf.cast(m, tf.int64)])
    return tf.random.stateless_uniform(shape, seed, minval=None, maxval=None, dtype=tf.int64)


def _uniform53(word: tf.Tensor) -> tf.Tensor:
    """A uniform on the grid {0, 1, ..., 2**53 - 1} * 2**-53, exactly, from a word's top 53 bits."""
    top = tf.bitwise.bitwise_and(tf.bitwise.right_shift(word, 11), _MASK53)
    return tf.cast(top, tf.float64) * 2.0**-53


def _uniform63(word: tf.Tensor) -> tf.Tensor:
    """W = (h + 1) 2**-63 in (0, 1] from the low 63 bits h of a word.

    The exact W is uniform on {1, ..., 2**63} * 2**-63; the float64 cast rounds once, monotonically
    and within a relative 2**-53, so P(W_float64 <= c) = c (1 +- 2**-52) - [0, 2**-63].
    """
    return (tf.cast(tf.bitwise.bitwise_and(word, _MASK63), tf.float64) + 1.0) * 2.0**-63


def _uniform126(word: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """A uniform W in (0, 1] with 126 bits where they matter: 63 bits h of `word`, and below 2**-10
    (h < 2**53, about 1 value in 1024) 63 more bits l, drawn from `seed` for those values only.

    W = (h + (l + 1) 2**-63) 2**-63 if h < 2**53, else (h + 1/2) 2**-63 (the centre of its cell:
    there the 2**-63 grid is already finer than float64's 2**-53 relative precision). For any
    threshold c, P(W <= c) = c - [0, 2**-126] for c < 2**-10 and c +- 2**-64 above; the float64
    evaluation rounds at most three times, monotonically in (h, l) and within a relative
    4 * 2**-53. So P(W_float64 <= c) = c (1 +- 5 * 2**-53) - [0, 2**-126]: relative accuracy for
    events as unlikely as 2**-70, where a 53- or 64-bit uniform would fail; for the price of one
    random word per value instead of two.
    """
    h = tf.bitwise.bitwise_and(word, _MASK63)
    fine = tf.where(h < 2**53)  # [c, 1] indices
    low = _words(1, tf.shape(fine, out_type=tf.int64)[0], seed)[0]
    low = (tf.cast(tf.bitwise.bitwise_and(low, _MASK63), tf.float64) + 1.0) * 2.0**-63
    centre = tf.fill(tf.shape(h), tf.constant(0.5, tf.float64))
    offset = tf.tensor_scatter_nd_update(centre, fine, low)
    return (tf.cast(h, tf.float64) + offset) * 2.0**-63


def _split(seed: tf.Tensor, num: int):
    """`num` independent sub-seeds of `seed`."""
    return tf.unstack(tf.random.experimental.stateless_split(seed, num=num))


# ----------------------------------------------------------------------------------------------
# Argument checks.


def _arguments(name: str, log2, seed, shape):
    """The checked (log2, seed, shape, number of outputs) of a public sampler's call."""
    shape, n = _check_shape(shape)
    return _check_log2(name, log2), _check_seed(seed), shape, n


def _check_log2(name: str, value) -> int:
    """`value` as an int in [0, MAX_LOG2], or a ValueError naming the argument."""
    message = f"`{name}` must be an integer in [0, {MAX_LOG2}] (scale 2**{name}), got {value!r}."
    if isinstance(value, bool):
        raise ValueError(message)
    try:
        number = operator.index(value)
    except TypeError:
        raise ValueError(message) from None
    if not 0 <= number <= MAX_LOG2:
        raise ValueError(message)
    return number


def _check_seed(seed) -> tf.Tensor:
    """`seed` as an int64 tensor of shape [2], or a ValueError."""
    message = f"`seed` must be an int64 tensor of shape [2], got {seed!r}."
    try:
        tensor = tf.convert_to_tensor(seed)
    except (TypeError, ValueError):
        raise ValueError(message) from None
    if not tensor.dtype.is_integer or not tensor.shape.is_compatible_with([2]):
        raise ValueError(message)
    return tf.cast(tensor, tf.int64)


def _check_shape(shape) -> Tuple[tf.Tensor, tf.Tensor]:
    """(shape as an int64 vector, its number of elements), or a ValueError."""
    if isinstance(shape, tf.TensorShape):
        if not shape.is_fully_defined():
            raise ValueError(f"`shape` must be fully defined, got {shape}.")
        shape = shape.as_list()
    message = f"`shape` must be a vector of non-negative integers, got {shape!r}."
    if isinstance(shape, (list, tuple)):
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise ValueError(message)
        shape = tf.constant(shape, tf.int64, shape=[len(shape)])
    try:
        tensor = tf.convert_to_tensor(shape)
    except (TypeError, ValueError):
        raise ValueError(message) from None
    if tensor.shape.rank not in (None, 1) or not tensor.dtype.is_integer:
        raise ValueError(message)
    tensor = tf.cast(tensor, tf.int64)
    return tensor, tf.reduce_prod(tensor)
