"""Dense: per-example kernel gradients are outer products (over positions: ghost norm or
materialized, the cheaper by the static shapes)."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfdp.training.rules.base import (LayerRule, flatten_positions, l1_norm, per_example_norm,
                                      sq_norm, var_key)
from tfdp.training.rules.registry import layer_rule


@layer_rule(keras.layers.Dense)
class DenseRule(LayerRule):
    """Dense: grad_W[b] = sum_t a[b,t] g[b,t]^T, grad_bias[b] = sum_t g[b,t]."""

    def supports(self, layer):
        # LoRA adapters and quantized kernels compute a different function of the weights.
        return (super().supports(layer) and not getattr(layer, "lora_enabled", False)
                and not getattr(layer, "quantization_mode", None))

    def forward(self, layer, inputs, *args, **kwargs):
        if isinstance(inputs, (tf.SparseTensor, tf.RaggedTensor)):
            return None
        a = tf.convert_to_tensor(inputs)
        if a.shape.rank == 2:
            z = tf.matmul(a, layer.kernel)
        else:
            z = tf.tensordot(a, layer.kernel, [[a.shape.rank - 1], [0]])
        if layer.use_bias:
            z = tf.nn.bias_add(z, layer.bias)
        return layer.activation(z), a, z

    @staticmethod
    def _stacked(calls):
        a = tf.concat([flatten_positions(a) for a, _ in calls], axis=1)
        g = tf.concat([flatten_positions(g) for _, g in calls], axis=1)
        return a, g

    def norms(self, layer, calls, kind):
        if len(calls) == 1 and calls[0][0].shape.rank == 2:
            a, g = calls[0]
            # The kernel gradient is the outer product a g^T, whose L2 (Frobenius) and L1
            # norms are the products of a's and g's norms; the bias gradient is g.
            size = tf.square if kind == "l2" else tf.abs
            g_size = tf.reduce_sum(size(g), 1)
            total = tf.reduce_sum(size(a), 1) * g_size
            return total + g_size if layer.use_bias else total
        a, g = self._stacked(calls)
        bias_grad = tf.reduce_sum(g, axis=1)
        positions, k_in, k_out = a.shape[1], a.shape[-1], g.shape[-1]
        ghost_is_cheaper = (None not in (positions, k_in, k_out)
                            and positions * (k_in + k_out) < k_in * k_out)
        if kind == "l2" and ghost_is_cheaper:
            # Ghost norm: |sum_t a_t g_t^T|^2 = sum_{t,s} (a_t . a_s)(g_t . g_s), no [B, in, out];
            # it costs T^2 (in + out) against T in out for the materialized gradient.
            aa = tf.einsum("bti,bsi->bts", a, a)
            gg = tf.einsum("bto,bso->bts", g, g)
            total = tf.reduce_sum(aa * gg, axis=[1, 2])
        elif kind == "l2":
            total = sq_norm(tf.einsum("bti,bto->bio", a, g))
        else:
            total = l1_norm(tf.einsum("bti,bto->bio", a, g))
        return total + per_example_norm(bias_grad, kind) if layer.use_bias else total

    def weighted_sums(self, layer, calls, weights):
        if len(calls) == 1 and calls[0][0].shape.rank == 2:
            a, g = calls[0]
            gw = g * tf.cast(weights, g.dtype)[:, None]
            sums = {var_key(layer.kernel): tf.matmul(a, gw, transpose_a=True)}
            if layer.use_bias:
                sums[var_key(layer.bias)] = tf.reduce_sum(gw, axis=0)
            return sums
        a, g = self._stacked(calls)
        gw = g * tf.cast(weights, g.dtype)[:, None, None]
        sums = {var_key(layer.kernel): tf.einsum("bti,bto->io", a, gw)}
        if layer.use_bias:
            sums[var_key(layer.bias)] = tf.reduce_sum(gw, axis=[0, 1])
        return sums
