"""Embedding: a row's per-example gradient is the sum of g where the token occurs; with
Keras's LoRA the same for the factor A (g taken into rank space), an outer product for B."""

from __future__ import annotations

from typing import Sequence, Tuple

import keras
import tensorflow as tf

from tfdp.training.rules.base import LayerRule, flatten_positions, var_key
from tfdp.training.rules.lora import LoraRule, last_axis_product, uses_lora
from tfdp.training.rules.registry import layer_rule


def _stacked(pairs: Sequence[Tuple[tf.Tensor, tf.Tensor]]):
    ids = tf.concat([tf.reshape(a, [tf.shape(a)[0], -1]) for a, _ in pairs], axis=1)
    g = tf.concat([flatten_positions(g) for _, g in pairs], axis=1)
    return ids, g


def row_norms(pairs: Sequence[Tuple[tf.Tensor, tf.Tensor]], vocab, kind: str) -> tf.Tensor:
    """[B]: norm of each example's table gradient, rows sum_{t: ids[b,t] = r} g[b,t], for
    pairs (ids, g) of a table with `vocab` rows."""
    ids, g = _stacked(pairs)
    if kind == "l2":
        same = tf.cast(tf.equal(ids[:, :, None], ids[:, None, :]), g.dtype)
        return tf.reduce_sum(same * tf.einsum("btd,bsd->bts", g, g), axis=[1, 2])
    # L1: sum per (example, token) first; segment ids make tokens of different examples distinct.
    batch = tf.shape(ids)[0]
    segments = ids + vocab * tf.range(batch)[:, None]
    rows = tf.math.unsorted_segment_sum(
        tf.reshape(g, [-1, tf.shape(g)[-1]]), tf.reshape(segments, [-1]), batch * vocab
    )
    return tf.reduce_sum(tf.reshape(tf.abs(rows), [batch, -1]), axis=1)


def row_sum(pairs: Sequence[Tuple[tf.Tensor, tf.Tensor]], weights, vocab) -> tf.Tensor:
    """[vocab, d]: sum_b weights[b] * example b's table gradient, for pairs (ids, g)."""
    ids, g = _stacked(pairs)
    gw = g * tf.cast(weights, g.dtype)[:, None, None]
    return tf.math.unsorted_segment_sum(
        tf.reshape(gw, [-1, tf.shape(gw)[-1]]), tf.reshape(ids, [-1]), vocab)


@layer_rule(keras.layers.Embedding)
class EmbeddingRule(LayerRule):
    """Embedding: row r of example b's gradient is the sum of g at the positions holding token r."""

    def variant(self, layer):
        return EMBEDDING_LORA if uses_lora(layer) else self

    def supports_config(self, layer) -> bool:
        """The class and its call, a dense table."""
        return super().supports(layer) and not getattr(layer, "sparse", False)

    def supports(self, layer):
        return self.supports_config(layer) and not uses_lora(layer)

    def variables(self, layer):
        return [layer.embeddings] if layer.embeddings.trainable else []

    def forward(self, layer, inputs, *args, **kwargs):
        ids = tf.cast(inputs, tf.int32)
        # `layer.embeddings` is Keras's effective table (E + s A B under LoRA).
        z = tf.gather(layer.embeddings, ids)
        return z, ids, z

    def norms(self, layer, calls, kind):
        return row_norms(calls, layer.input_dim, kind)

    def weighted_sums(self, layer, calls, weights):
        return {var_key(layer.embeddings): row_sum(calls, weights, layer.input_dim)}


class EmbeddingLoraRule(LoraRule, EmbeddingRule):
    """Embedding with Keras's LoRA: table E + s A B; A [vocab, r] gathered by row, B [r, d]."""

    layer_types = (keras.layers.Embedding,)
    kernel_property = "embeddings"
    frozen_name = "_embeddings"
    factor_names = ("lora_embeddings_a", "lora_embeddings_b")

    def rank_input(self, layer, a):
        return tf.gather(tf.cast(layer.lora_embeddings_a, layer.compute_dtype), a)

    def rank_gradient(self, layer, a, g):
        return last_axis_product(g, layer.lora_embeddings_b, transpose=True)

    def kernel_norms(self, layer, pairs, kind, low_rank):
        return row_norms(pairs, layer.input_dim, kind)

    def kernel_sum(self, layer, pairs, weights, low_rank):
        return row_sum(pairs, weights, layer.input_dim)


EMBEDDING_LORA = EmbeddingLoraRule()
