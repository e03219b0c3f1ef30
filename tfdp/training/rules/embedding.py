"""Embedding: a row's per-example gradient is the sum of g where the token occurs."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfdp.training.rules.base import (LayerRule, flatten_positions, l1_norm, per_example_norm,
                                      sq_norm, var_key)
from tfdp.training.rules.registry import layer_rule


@layer_rule(keras.layers.Embedding)
class EmbeddingRule(LayerRule):
    """Embedding: row r of example b's gradient is the sum of g at the positions holding token r."""

    def supports(self, layer):
        return super().supports(layer) and not getattr(layer, "sparse", False)

    def variables(self, layer):
        return [layer.embeddings] if layer.embeddings.trainable else []

    def forward(self, layer, inputs, *args, **kwargs):
        ids = tf.cast(inputs, tf.int32)
        z = tf.gather(layer.embeddings, ids)
        return z, ids, z

    @staticmethod
    def _stacked(calls):
        ids = tf.concat([tf.reshape(a, [tf.shape(a)[0], -1]) for a, _ in calls], axis=1)
        g = tf.concat([flatten_positions(g) for _, g in calls], axis=1)
        return ids, g

    def norms(self, layer, calls, kind):
        ids, g = self._stacked(calls)
        if kind == "l2":
            same = tf.cast(tf.equal(ids[:, :, None], ids[:, None, :]), g.dtype)
            return tf.reduce_sum(same * tf.einsum("btd,bsd->bts", g, g), axis=[1, 2])
        # L1: sum per (example, token) first; segment ids make tokens of different examples distinct.
        batch = tf.shape(ids)[0]
        vocab = tf.shape(layer.embeddings)[0]
        segments = ids + vocab * tf.range(batch)[:, None]
        rows = tf.math.unsorted_segment_sum(
            tf.reshape(g, [-1, tf.shape(g)[-1]]), tf.reshape(segments, [-1]), batch * vocab
        )
        return tf.reduce_sum(tf.reshape(tf.abs(rows), [batch, -1]), axis=1)

    def weighted_sums(self, layer, calls, weights):
        ids, g = self._stacked(calls)
        gw = g * tf.cast(weights, g.dtype)[:, None, None]
        dense = tf.math.unsorted_segment_sum(
            tf.reshape(gw, [-1, tf.shape(gw)[-1]]), tf.reshape(ids, [-1]),
            tf.shape(layer.embeddings)[0],
        )
        return {var_key(layer.embeddings): dense}
