"""Batched per-unit clipping and summing, the same bound as each query's preprocess_record."""

from __future__ import annotations

from typing import List

import tensorflow as tf
from tfdp._tf_privacy import dp_query
from tfdp.mechanisms import clip_norm_kind  # "l2" / "l1" / None: the query's mechanism says

# Why on_nonfinite="skip" is refused where examples are not isolated ({where}: the path).
SKIP_NEEDS_ISOLATION = (
    "on_nonfinite='skip' is not supported on {where}: the per-example gradients come from "
    "one batched Jacobian, where a single NaN/inf example makes every example's row "
    "non-finite (the batched backward multiplies it by zeros), so skipping would zero the "
    "whole batch and one record could move the step's clipped sum by up to batch size x "
    "clip, which breaks the DP guarantee. Use on_nonfinite='raise' (the step stops with an "
    "error and stays in the ledger), or train a Keras model with tfdp.make_private(model) on "
    "its fast path (no num_microbatches, an L2/L1 clipping query, use_fast_path=True, every "
    "trainable variable on a layer rule or a layer's own per-example VJP), whose rules "
    "isolate each example exactly."
)


def per_unit_norms(per_unit_grads: List[tf.Tensor], kind: str) -> tf.Tensor:
    """Global L2 or L1 norm of each unit's gradient; each tensor is [units, ...]."""
    if kind == "l2":
        squares = [tf.reduce_sum(tf.reshape(tf.square(g), [tf.shape(g)[0], -1]), axis=1)
                   for g in per_unit_grads]
        return tf.sqrt(tf.add_n(squares))
    sums = [tf.reduce_sum(tf.reshape(tf.abs(g), [tf.shape(g)[0], -1]), axis=1)
            for g in per_unit_grads]
    return tf.add_n(sums)


def clip_and_sum(query: dp_query.SumAggregationDPQuery, params, per_unit_grads: List[tf.Tensor]):
    """Clips every unit's gradient as `query.preprocess_record` would, and sums over units.

    Known L2/L1 queries are clipped in one batched computation; any other sum query
    runs its own `preprocess_record` under `tf.vectorized_map`.
    """
    kind = clip_norm_kind(query)
    if kind is None:
        clipped = tf.vectorized_map(lambda unit: query.preprocess_record(params, unit), per_unit_grads)
        return [tf.reduce_sum(c, axis=0) for c in clipped]
    norms = per_unit_norms(per_unit_grads, kind)
    clip = tf.cast(params, norms.dtype)
    # Same factor as tf.clip_by_global_norm: clip / max(norm, clip), so units inside the ball stay.
    scale = clip / tf.maximum(norms, clip)
    return [tf.tensordot(tf.cast(scale, g.dtype), g, axes=1) for g in per_unit_grads]


def finite_units(per_unit_tensors: List[tf.Tensor], unit_losses: tf.Tensor) -> tf.Tensor:
    """[units] bool: the unit's loss and every entry of its gradients (or norms) are finite."""
    finite = tf.math.is_finite(unit_losses)
    for t in per_unit_tensors:
        if t.dtype.is_floating:
            flat = tf.reshape(t, [tf.shape(t)[0], -1])
            finite = tf.logical_and(finite, tf.reduce_all(tf.math.is_finite(flat), axis=1))
    return finite


def zero_units(t: tf.Tensor, keep: tf.Tensor) -> tf.Tensor:
    """Zeroes the units (leading axis) where `keep` is False; integer tensors pass through."""
    if not t.dtype.is_floating:
        return t
    mask = tf.reshape(keep, tf.concat([tf.shape(keep), tf.ones([tf.rank(t) - 1], tf.int32)], 0))
    return tf.where(mask, t, tf.zeros_like(t))
