"""The protocol tfdp's queries add to TF Privacy's DPQuery: noise from an explicit seed.

`get_noised_result_with_seed(sample_state, global_state, seed)` draws every random
number of the release (the noise, the random schedule's coin) from `seed`, a [2] int64
stateless seed. The DP optimizer passes each step's seed from its secret key
(`tfdp.randomness.SecretKey`); the plain DPQuery method `get_noised_result`, for code
that calls a query on its own, draws a fresh seed from the operating system's entropy.
Neither reads TensorFlow's global RNG, so no `set_random_seed` can replay the noise.
"""

from __future__ import annotations

import math
from typing import List, Tuple

import tensorflow as tf

from tfdp.randomness import grid, os_entropy_seed, split_seeds


class SeededNoiseQuery:
    """Mixin for sum queries whose noise is a function of an explicit stateless seed."""

    def get_noised_result_with_seed(self, sample_state, global_state, seed: tf.Tensor):
        """Like `get_noised_result`, with every random draw made from `seed`."""
        raise NotImplementedError

    def get_noised_result(self, sample_state, global_state):
        """Implements `DPQuery.get_noised_result` with a fresh seed from OS entropy."""
        return self.get_noised_result_with_seed(sample_state, global_state, os_entropy_seed())

    def state_settings(self, global_state) -> List[Tuple[str, tf.Tensor, float]]:
        """`(name, state leaf, Python setting)` of every setting the global state repeats.

        The clip and the noise are always taken from the Python settings (the ones the
        accountant reads); a state restored from a file saved with other settings is
        caught by comparing these pairs (`settings_agree`).
        """
        return []


# Relative tolerance between a query's stated noise multiplier and its stddev / clip, and
# between a setting and its float32 copy in the global state.
SETTINGS_RTOL = 1e-6


def settings_agree(a: float, b: float) -> bool:
    """True when two values of one setting agree up to `SETTINGS_RTOL` (float32 copies do)."""
    return math.isclose(float(a), float(b), rel_tol=SETTINGS_RTOL, abs_tol=1e-12)


def noise_on_grid(sample_state, seed: tf.Tensor, *, clip: float, noise_multiplier: float,
                  norm: str):
    """The floating-point-safe release: `tfdp.randomness.grid.noised_on_grid` on every leaf."""
    leaves = tf.nest.flatten(sample_state)
    noised = grid.noised_on_grid(leaves, seed, clip=clip, noise_multiplier=noise_multiplier,
                                 norm=norm)
    return tf.nest.pack_sequence_as(sample_state, noised)


def noise_each_leaf(sample_state, seed: tf.Tensor, draw):
    """`leaf + draw(shape, dtype, leaf_seed)` for every leaf, each with a seed of its own.

    The draws depend on `seed` and the leaves' static shapes only, never on the leaves'
    values or on the control dependencies around the call: a graph can draw the noise while
    the gradients are still being computed (on a large model the draw is most of the DP
    step's fixed cost). Only the sum waits for the data.
    """
    leaves = tf.nest.flatten(sample_state)
    with tf.control_dependencies(None):
        seeds = split_seeds(seed, max(len(leaves), 1))
        noises = [draw(leaf.shape, leaf.dtype, seeds[i]) if leaf.shape.is_fully_defined()
                  else None for i, leaf in enumerate(leaves)]
    noised = []
    for i, (leaf, noise) in enumerate(zip(leaves, noises)):
        if noise is None:  # a dynamic shape: this draw has to wait for the leaf
            noise = draw(tf.shape(leaf), leaf.dtype, seeds[i])
        noised.append(leaf + noise)
    return tf.nest.pack_sequence_as(sample_state, noised)
