"""Laplace sum query: global L1 clipping of each record and Laplace noise on the sum."""

from __future__ import annotations

import collections
from typing import Any, Dict, List, Tuple

import dp_accounting
import tensorflow as tf
from tfdp._tf_privacy import dp_query

from tfdp._validation import check_non_negative, check_positive
from tfdp.queries.seeded import SeededNoiseQuery, noise_each_leaf, noise_on_grid
from tfdp.randomness import laplace_noise


def clip_by_global_l1_norm(record: Any, l1_norm_clip: tf.Tensor):
    """Scales a nested record so that the L1 norm over all its tensors is <= `l1_norm_clip`.

    Returns `(clipped_record, l1_norm_before_clipping)`.
    """
    leaves = tf.nest.flatten(record)
    l1_norm = tf.add_n([tf.reduce_sum(tf.abs(tf.cast(t, tf.float32))) for t in leaves])
    clip = tf.cast(l1_norm_clip, tf.float32)
    # Records already inside the ball are left untouched (scale 1); a zero record stays zero.
    scale = tf.minimum(1.0, clip / tf.maximum(l1_norm, 1e-30))
    clipped = [t * tf.cast(scale, t.dtype) for t in leaves]
    return tf.nest.pack_sequence_as(record, clipped), l1_norm


class LaplaceSumQuery(SeededNoiseQuery, dp_query.SumAggregationDPQuery):
    """DPQuery that clips each record to an L1 ball and adds Laplace noise to the sum.

    Each record (any nest of tensors) is scaled so that its global L1 norm is at
    most `l1_norm_clip`; the sum of records gets i.i.d. Laplace noise of scale
    `noise_multiplier * l1_norm_clip` in every coordinate. Laplace noise calibrated
    to the L1 sensitivity gives pure (epsilon, 0)-DP per release with
    epsilon = 1 / noise_multiplier (add/remove adjacency, before sampling); the
    returned event is `dp_accounting.LaplaceDpEvent(noise_multiplier)`. The noise is
    drawn from an explicit seed (`get_noised_result_with_seed`), never from TensorFlow's
    global RNG. With `floating_point_safe=True` the sum is rounded onto a fine grid and
    the noise is floor(Laplace) on it (`tfdp.randomness.grid`): a post-processing of the
    same Laplace mechanism whose release leaks nothing through low-order bits.
    """

    _GlobalState = collections.namedtuple("_GlobalState", ["l1_norm_clip", "noise_scale"])

    def __init__(self, l1_norm_clip: float, noise_multiplier: float,
                 floating_point_safe: bool = False):
        self._l1_norm_clip = check_positive("l1_norm_clip", l1_norm_clip)
        self._noise_multiplier = check_non_negative("noise_multiplier", noise_multiplier)
        self._floating_point_safe = bool(floating_point_safe)

    @property
    def floating_point_safe(self) -> bool:
        """True when the noise is floor(Laplace) on a grid (`tfdp.randomness.grid`)."""
        return self._floating_point_safe

    @property
    def l1_norm_clip(self) -> float:
        """The L1 bound applied to every record."""
        return self._l1_norm_clip

    @property
    def noise_multiplier(self) -> float:
        """Ratio of the Laplace scale to the L1 clip."""
        return self._noise_multiplier

    def initial_global_state(self):
        """Implements `DPQuery.initial_global_state`."""
        return self._GlobalState(
            tf.constant(self._l1_norm_clip, tf.float32),
            tf.constant(self._noise_multiplier * self._l1_norm_clip, tf.float32),
        )

    def derive_sample_params(self, global_state):
        """Implements `DPQuery.derive_sample_params`: the Python L1 clip, not the state's copy."""
        del global_state  # compared with the settings by `state_settings`, never used
        return tf.constant(self._l1_norm_clip, tf.float32)

    def state_settings(self, global_state) -> List[Tuple[str, tf.Tensor, float]]:
        """The clip and the noise scale, as the global state holds them and as set."""
        return [("l1_norm_clip", global_state.l1_norm_clip, self._l1_norm_clip),
                ("noise_scale", global_state.noise_scale,
                 self._noise_multiplier * self._l1_norm_clip)]

    def preprocess_record(self, params, record):
        """Implements `DPQuery.preprocess_record`: global L1 clipping."""
        clipped, _ = clip_by_global_l1_norm(record, params)
        return clipped

    def get_noised_result_with_seed(self, sample_state, global_state, seed):
        """Adds Laplace noise, drawn from `seed`, to every coordinate.

        The scale is noise_multiplier * l1_norm_clip from the Python settings (the
        accounted ones), never the state's copy.
        """
        scale = self._noise_multiplier * self._l1_norm_clip
        if self._floating_point_safe and self._noise_multiplier > 0:
            result = noise_on_grid(sample_state, seed, clip=self._l1_norm_clip,
                                   noise_multiplier=self._noise_multiplier, norm="l1")
        else:
            result = noise_each_leaf(
                sample_state, seed,
                lambda shape, dtype, leaf_seed: laplace_noise(shape, scale, leaf_seed, dtype))
        event = dp_accounting.LaplaceDpEvent(self._noise_multiplier)
        return result, global_state, event

    def get_config(self) -> Dict[str, Any]:
        """Returns the constructor arguments."""
        return {"l1_norm_clip": self._l1_norm_clip, "noise_multiplier": self._noise_multiplier,
                "floating_point_safe": self._floating_point_safe}
