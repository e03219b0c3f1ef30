"""Gaussian and Laplace noise drawn from an explicit stateless seed (never from a global RNG).

Whatever the user seeds (`keras.utils.set_random_seed`, `tf.random.set_seed`), these draws
depend only on the seed passed in, which the DP optimizer takes from its secret key
(`tfdp.randomness.SecretKey`) and a query called on its own takes from the OS's entropy.
"""

from __future__ import annotations

import tensorflow as tf


def split_seeds(seed: tf.Tensor, num: int) -> tf.Tensor:
    """`num` independent [2] seeds ([num, 2]) from one stateless seed."""
    return tf.random.experimental.stateless_split(seed, num=num)


def gaussian_noise(shape, stddev, seed: tf.Tensor, dtype: tf.DType = tf.float32) -> tf.Tensor:
    """i.i.d. N(0, stddev^2) noise of `shape`, a deterministic function of `seed`."""
    draw = tf.random.stateless_normal(shape, seed=seed, dtype=tf.float32)
    return tf.cast(tf.cast(stddev, tf.float32) * draw, dtype)


def laplace_noise(shape, scale, seed: tf.Tensor, dtype: tf.DType = tf.float32) -> tf.Tensor:
    """i.i.d. Laplace(0, scale) noise of `shape`: the difference of two Exponential(scale) draws."""
    seeds = split_seeds(seed, 2)
    # 1 - U lies in (0, 1], so the logarithms are finite.
    u1 = 1.0 - tf.random.stateless_uniform(shape, seed=seeds[0], dtype=tf.float32)
    u2 = 1.0 - tf.random.stateless_uniform(shape, seed=seeds[1], dtype=tf.float32)
    noise = tf.cast(scale, tf.float32) * (tf.math.log(u2) - tf.math.log(u1))
    return tf.cast(noise, dtype)
