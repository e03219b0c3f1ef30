"""Floating-point-safe DP noise: integer-valued samplers in TensorFlow ops, keyed by a stateless seed.

Textbook floating-point Laplace or Gaussian noise leaks the noiseless value through the low-order
bits of its outputs (Mironov, CCS 2012; Jin et al., S&P 2022): the set of floats reachable from
x + noise depends on x. These samplers return integers instead (noise on a grid, which the caller
scales), and float64 enters only through Bernoulli acceptances: an acceptance probability is
computed from exact integers and compared with a uniform built exactly from random bits. Nothing
is an inverse CDF of the output itself, so every output probability is the exact one up to a tiny
*relative* error (`float_error_bound`).

Randomness: each function takes `seed`, an int64 tensor of shape [2], and uses only
`tf.random.stateless_*` ops (sub-seeds by `stateless_split`; round i of a rejection loop folds in
i). Same seed, same draws, eagerly and inside a `tf.function`.

Scales are powers of two, t = 2**scale_log2 and s = 2**sigma_log2 with exponents in [0, 40], so
every integer stays below 2**47 in magnitude: no int64 overflow, exact conversions to float64.

Small probabilities are decided by uniforms with 126 random bits (`_uniform126`), which resolve
events down to 2**-126. The relative guarantee therefore holds everywhere except in a far tail of
total probability below 1e-22 (geometric parts >= 51 t; discrete Gaussian |k| > 10.8 s), where
the absolute error of each acceptance is still below 2**-126. Outputs are unreachable beyond
88 t (geometric, discrete Laplace) and beyond about 14.2 s (discrete Gaussian).
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
# Each rejection round draws (still needed) * _OVERSAMPLE / (acceptance rate) + _EXTRA candidates:
# one round almost always suffices for large n, and tiny n does not loop for long.
_OVERSAMPLE = 1.1
_EXTRA = 16
# V (below) takes values 0..J with J = floor(126 ln 2) = 87: exp(-87) is the last threshold at or
# above the smallest 126-bit uniform, 2**-126.
_V_MAX = int(126 * math.log(2))


def float_error_bound() -> float:
    """A conservative bound eta on the relative error of any single output probability.

    Every output probability p' of the samplers here satisfies |p' - p| <= eta * p against the
    exact pmf p, for all outputs outside the far tail described in the module docstring (total
    probability below 1e-22, where the error is absolute, below 2**-126 per acceptance).

    Returns 2**-40 (about 9.1e-13).
    """
    # Budget, in units of u = 2**-53 (float64 unit roundoff), assuming tf.exp within 2 ulps (the
    # test file measures it against Python's math.exp) and Python's math.exp within 1 ulp:
    #  * U acceptance exp(-U/t) >= 1/e: exp error 4u, 53-bit uniform grid e*u -> 7u; the pmf of U
    #    is a ratio of such probabilities -> 14u.
    #  * V: thresholds exp(-j) within 2u, the 126-bit uniform's float64 rounding within 4u (and
    #    monotone), grid 2**-126 -> P(V = j) within 16u for j <= 50.
    #  * Gaussian acceptance exp(-x), x = d*d/2 rounded once: x*u from the argument (x <= 48.5 in
    #    the covered range |k| <= 10.8 s), 4u from exp, 4u from the uniform's rounding, grid
    #    2**-126 <= 2**-70 p -> 57u.
    # An output probability is a product of these normalised by their sum: a relative error e in
    # each factor moves it by at most about 2e. Worst case 2 * (14 + 16 + 57) u = 174u < 2**-45.5;
    # 2**-40 leaves a factor 45 for a less accurate exp (e.g. on another device).
    return 2.0**-40


def geometric(shape: ShapeLike, scale_log2: int, seed: tf.Tensor) -> tf.Tensor:
    """Integers g >= 0 with P(G = g) proportional to exp(-g / t), t = 2**scale_log2 (int64).

    G = U + t * V with U and V independent:
      * U on {0, ..., t-1} with P(U = u) proportional to exp(-u / t): the low scale_log2 bits of a
        random word (exactly uniform, no modulo bias), accepted with probability exp(-u / t) >= 1/e
        by comparing a 53-bit uniform; rejected candidates are redrawn.
      * V with P(V >= j) = exp(-j): the number of thresholds exp(-1), exp(-2), ... at or above a
        126-bit uniform W in (0, 1] (so V = floor(-ln W) without rounding -ln W); V <= 87.
    P(U + t V = g) = exp(-u / t) exp(-v) / const = exp(-g / t) / const.

    Args:
      shape: output shape.
      scale_log2: integer in [0, 40]; the scale is t = 2**scale_log2.
      seed: int64 tensor of shape [2] for the stateless random ops.

    Returns:
      An int64 tensor of `shape`.
    """
    k = _check_log2("scale_log2", scale_log2)
    seed = _check_seed(seed)
    shape, n = _check_shape(shape)
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
    k = _check_log2("scale_log2", scale_log2)
    seed = _check_seed(seed)
    shape, n = _check_shape(shape)
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
    k = _check_log2("scale_log2", scale_log2)
    seed = _check_seed(seed)
    shape, n = _check_shape(shape)
    seed_laplace, seed_bit = _split(seed, 2)
    bit = tf.bitwise.bitwise_and(_words(1, n, seed_bit)[0], 1)
    return tf.reshape(_discrete_laplace_flat(n, k, seed_laplace) - bit, shape)


def discrete_gaussian(shape: ShapeLike, sigma_log2: int, seed: tf.Tensor) -> tf.Tensor:
    """Integers k with P(k) proportional to exp(-k**2 / (2 s**2)), s = 2**sigma_log2 (int64).

    Rejection sampling of Canonne, Kamath and Steinke 2020 ("The Discrete Gaussian for
    Differential Privacy", Algorithm 3) with a discrete Laplace proposal of scale t = s: a
    proposal Y is accepted with probability exp(-(|Y| - s**2/t)**2 / (2 s**2)) = exp(-d*d / 2),
    d = (|Y| - s) / s computed exactly in float64, so that P(Y = k) * accept(k) is proportional to
    exp(-(k**2 + s**2) / (2 s**2)). The proposal is drawn as in their Algorithm 2, as +-G for
    a `geometric` G with a fair sign, discarding (-, 0): the discrete Laplace at half the cost of a
    difference of two geometrics; that discard joins the acceptance test. About 76% of proposals
    are accepted for large s (48% for s = 1).

    Relation to the rounded Gaussian: P(round(N(0, s**2)) = k) = P(k) * I(k) * (1 + theta) with
    I(k) = integral over w in [-1/2, 1/2] of exp(-(2 k w + w**2) / (2 s**2)), which lies between
    exp(-1/(8 s**2)) and sinh(x)/x, x = |k| / (2 s**2); and 0 <= theta <= 2.0001 exp(-2 pi**2 s**2)
    compares the normalisers (Poisson summation). For |k| <= 45 s, sinh(x)/x <= 1 + 85/s**2: the
    two pmfs agree within a factor 1 +- 8.1e-5 for s >= 2**10, and within 1 +- 4e-16 for
    s >= 2**29. Outputs beyond about 14.2 s are unreachable here (the acceptance probability falls
    below the 2**-126 resolution of the uniform); their probability under round(N(0, s**2)) is
    below 1e-45, and `float_error_bound` covers |k| <= 10.8 s (the rest has probability < 3e-27).

    Args:
      shape: output shape.
      sigma_log2: integer in [0, 40]; the scale is s = 2**sigma_log2.
      seed: int64 tensor of shape [2] for the stateless random ops.

    Returns:
      An int64 tensor of `shape`.
    """
    k = _check_log2("sigma_log2", sigma_log2)
    seed = _check_seed(seed)
    shape, n = _check_shape(shape)
    s = 1 << k

    def draw(m, round_seed):
        seed_g, seed_w = _split(round_seed, 2)
        g = _geometric_flat(m, k, seed_g)
        hi, lo = tf.unstack(_words(2, m, seed_w))
        negative = hi < 0  # the top bit; _uniform126 reads only the low 63 bits of hi
        d = tf.cast(g - s, tf.float64) * 2.0**-k  # exact: |g - s| < 2**47, power-of-two scaling
        accept = _uniform126(hi, lo) <= tf.exp(-0.5 * (d * d))
        accept &= ~(negative & tf.equal(g, 0))
        return tf.where(negative, -g, g), accept

    # Acceptance rate: (1 - exp(-1/s)) / 2 * exp(-1/2) * sum_k exp(-k**2 / (2 s**2)), the sum
    # being s sqrt(2 pi) up to a relative 1e-8 (Poisson summation); it only sizes the rounds.
    rate = -math.expm1(-1.0 / s) / 2 * math.exp(-0.5) * s * math.sqrt(2 * math.pi)
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
        # exp(-u/t) >= 1/e, so the 53-bit grid of the uniform is a relative error below e 2**-53.
        # u / t is exact (u < 2**40, power-of-two scaling).
        accept = _uniform53(coin) < tf.exp(tf.cast(u, tf.float64) * -(2.0**-k))
        return u, accept

    # Mean of exp(-u/t) over the t values of u: the acceptance rate of the U rejection loop.
    rate = 1.0 if k == 0 else -math.expm1(-1.0) / (t * -math.expm1(-1.0 / t))
    u = _fill(n, rate, seed_u, draw_u)
    hi, lo = tf.unstack(_words(2, n, seed_v))
    return u + tf.bitwise.left_shift(_exp_floor(_uniform126(hi, lo)), k)


def _discrete_laplace_flat(n: tf.Tensor, k: int, seed: tf.Tensor) -> tf.Tensor:
    """n discrete Laplace draws of scale 2**k as G1 - G2: the 2n geometrics come from one loop."""
    g = _geometric_flat(2 * n, k, seed)
    return g[:n] - g[n:]


def _exp_floor(w: tf.Tensor) -> tf.Tensor:
    """V = #{j >= 1 : w <= exp(-j)}, i.e. P(V >= j) = P(W <= exp(-j)) = exp(-j) for uniform W.

    This is floor(-ln w) without the rounding error of a logarithm: each event V >= j is decided
    by comparing w with exp(-j) (correctly rounded to within an ulp by Python's math.exp).
    """
    thresholds = tf.constant([math.exp(-j) for j in range(_V_MAX, 0, -1)], tf.float64)  # ascending
    below = tf.searchsorted(thresholds, w, side="left", out_type=tf.int64)  # #{j : exp(-j) < w}
    return _V_MAX - below


def _fill(
    n: tf.Tensor,
    rate: float,
    seed: tf.Tensor,
    draw: Callable[[tf.Tensor, tf.Tensor], Tuple[tf.Tensor, tf.Tensor]],
) -> tf.Tensor:
    """The first n accepted candidates, in order, of rounds of `draw(m, round_seed)`.

    `draw` returns m i.i.d. candidate values and a mask of the accepted ones. Round i uses
    fold_in(seed, i) and asks for about (still needed) * 1.1 / rate candidates. The round sizes
    depend on counts only, so the accepted values are i.i.d. from the target distribution.
    """
    factor = _OVERSAMPLE / rate

    def needed(out):
        return n - tf.size(out, out_type=tf.int64)

    def body(i, out):
        m = tf.cast(tf.math.ceil(tf.cast(needed(out), tf.float64) * factor), tf.int64) + _EXTRA
        values, accept = draw(m, tf.random.experimental.stateless_fold_in(seed, i))
        return i + 1, tf.concat([out, tf.boolean_mask(values, accept)], axis=0)

    _, out = tf.while_loop(
        lambda i, out: needed(out) > 0,
        body,
        (tf.constant(0, tf.int64), tf.zeros([0], tf.int64)),
        shape_invariants=(tf.TensorShape([]), tf.TensorShape([None])),
    )
    return out[:n]


def _words(rows: int, m: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """[rows, m] independent uniform 64-bit words (int64): one stateless op for all of them."""
    shape = tf.stack([tf.constant(rows, tf.int64), tf.cast(m, tf.int64)])
    return tf.random.stateless_uniform(shape, seed, minval=None, maxval=None, dtype=tf.int64)


def _uniform53(word: tf.Tensor) -> tf.Tensor:
    """A uniform on the grid {0, 1, ..., 2**53 - 1} * 2**-53, exactly, from a word's top 53 bits."""
    return tf.cast(tf.bitwise.bitwise_and(tf.bitwise.right_shift(word, 11), _MASK53), tf.float64) * 2.0**-53


def _uniform126(hi: tf.Tensor, lo: tf.Tensor) -> tf.Tensor:
    """W = (h + (l + 1) 2**-63) 2**-63 in (0, 1] from the low 63 bits h, l of two words.

    The exact W is uniform on the grid {1, ..., 2**126} * 2**-126. Its float64 evaluation rounds
    three times but is non-decreasing in (h, l) and within a relative 4 * 2**-53 of W, so for any
    threshold c, P(W_float64 <= c) = c (1 +- 4 * 2**-53) - [0, 2**-126]: relative accuracy for
    events as unlikely as 2**-70, where a 53- or 64-bit uniform would fail.
    """
    h = tf.cast(tf.bitwise.bitwise_and(hi, _MASK63), tf.float64)
    l = tf.cast(tf.bitwise.bitwise_and(lo, _MASK63), tf.float64)
    return (h + (l + 1.0) * 2.0**-63) * 2.0**-63


def _split(seed: tf.Tensor, num: int):
    """`num` independent sub-seeds of `seed`."""
    return tf.unstack(tf.random.experimental.stateless_split(seed, num=num))


# ----------------------------------------------------------------------------------------------
# Argument checks.


def _check_log2(name: str, value) -> int:
    """`value` as an int in [0, MAX_LOG2], or a ValueError naming the argument."""
    message = f"`{name}` must be an integer in [0, {MAX_LOG2}] (the scale is 2**{name}), got {value!r}."
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
    try:
        tensor = tf.convert_to_tensor(seed)
    except (TypeError, ValueError):
        raise ValueError(f"`seed` must be an int64 tensor of shape [2], got {seed!r}.") from None
    if not tensor.dtype.is_integer or not tensor.shape.is_compatible_with([2]):
        raise ValueError(f"`seed` must be an int64 tensor of shape [2], got {seed!r}.")
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
