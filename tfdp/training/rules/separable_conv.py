"""SeparableConv1D/SeparableConv2D: a depthwise convolution, then a 1x1 (pointwise) one.

The forward re-runs the layer's two stages as Keras's TensorFlow backend computes them
(`tf.nn.separable_conv2d` is the depthwise convolution followed by a VALID 1x1 conv2d, and
Keras's stride-with-dilation decomposition is the same pair), keeping both intermediates:
z = (d, p) with d the depthwise output [B, *S', C*M] and p the pre-activation
[B, *S', F]; the gradient w.r.t. d then already includes the path through the pointwise
kernel. With a = (x, d):

- depthwise kernel: the depthwise filter gradient of (x[b], g_d[b]) for every example in
  one op, the batch folded into the channels (`depthwise_conv.py`);
- pointwise kernel: a Dense-like sum over positions of d[b, t] g_p[b, t]^T; its squared
  L2 norm takes the ghost form sum_{t,s} (d_t . d_s)(g_t . g_s) when that is cheaper than
  materializing [B, C*M, F] (static shapes decide at trace time);
- bias: the sum over positions of g_p[b].
"""

from __future__ import annotations

from typing import Dict, List

import keras
import tensorflow as tf

from tfdp.training.rules.base import (LayerRule, flatten_positions, per_example_norm,
                                      scale_examples, var_key, weighted_batch_sum)
from tfdp.training.rules.depthwise_conv import (accepts_input, depthwise_config_supported,
                                                depthwise_forward,
                                                per_example_depthwise_gradients, spatial_sum)
from tfdp.training.rules.registry import layer_rule


def _pointwise(layer, d: tf.Tensor) -> tf.Tensor:
    """The VALID 1x1 conv2d of the separable conv's second stage (1D: on a height-one image)."""
    if layer.rank == 1:
        return tf.squeeze(tf.nn.conv2d(d[:, None], tf.expand_dims(layer.pointwise_kernel, 0),
                                       [1, 1, 1, 1], "VALID"), [1])
    return tf.nn.conv2d(d, layer.pointwise_kernel, [1, 1, 1, 1], "VALID")


@layer_rule(keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
class SeparableConvRule(LayerRule):
    """SeparableConv1D/2D (channels last, any depth_multiplier, strides, dilation, padding)."""

    def supports(self, layer):
        return super().supports(layer) and depthwise_config_supported(layer)

    def forward(self, layer, inputs, *args, **kwargs):
        x = accepts_input(layer, inputs)
        if x is None:
            return None
        d = depthwise_forward(layer, x, layer.depthwise_kernel)
        p = _pointwise(layer, d)
        if layer.use_bias:
            p = p + tf.reshape(layer.bias, [1] * (layer.rank + 1) + [-1])
        out = p if layer.activation is None else layer.activation(p)
        return out, (x, d), (d, p)

    def variables(self, layer) -> List[tf.Variable]:
        return [v for v in (layer.depthwise_kernel, layer.pointwise_kernel, layer.bias)
                if v is not None and v.trainable]

    # ----- the three parts -----

    @staticmethod
    def _depthwise(layer, calls) -> tf.Tensor:
        """[B, *k, C, M], summed over calls."""
        return tf.add_n([per_example_depthwise_gradients(layer, x, g_d, layer.kernel_size,
                                                         layer.depth_multiplier)
                         for (x, _), (g_d, _) in calls])

    @staticmethod
    def _stacked(calls):
        """(d, g_p) of all calls as [B, T, C*M] and [B, T, F], positions of all calls stacked."""
        d = tf.concat([flatten_positions(d) for (_, d), _ in calls], axis=1)
        g = tf.concat([flatten_positions(g_p) for _, (_, g_p) in calls], axis=1)
        return d, g

    @staticmethod
    def _ghost_is_cheaper(d: tf.Tensor, g: tf.Tensor) -> bool:
        positions, k_in, k_out = d.shape[1], d.shape[-1], g.shape[-1]
        return None not in (positions, k_in, k_out) and positions * (k_in + k_out) < k_in * k_out

    @staticmethod
    def _pointwise_per_example(d: tf.Tensor, g: tf.Tensor) -> tf.Tensor:
        """[B, C*M, F]: the pointwise kernel's per-example gradients (without its leading ones)."""
        return tf.matmul(d, g, transpose_a=True)

    @staticmethod
    def _bias(calls) -> tf.Tensor:
        return tf.add_n([spatial_sum(g_p) for _, (_, g_p) in calls])

    def norms(self, layer, calls, kind):
        parts = []
        if layer.depthwise_kernel.trainable:
            parts.append(per_example_norm(self._depthwise(layer, calls), kind))
        if layer.pointwise_kernel.trainable:
            d, g = self._stacked(calls)
            if kind == "l2" and self._ghost_is_cheaper(d, g):
                gram = tf.matmul(d, d, transpose_b=True) * tf.matmul(g, g, transpose_b=True)
                parts.append(tf.reduce_sum(gram, axis=[1, 2]))
            else:
                parts.append(per_example_norm(self._pointwise_per_example(d, g), kind))
        if layer.use_bias and layer.bias.trainable:
            parts.append(per_example_norm(self._bias(calls), kind))
        return tf.add_n(parts)

    def weighted_sums(self, layer, calls, weights):
        sums: Dict[int, tf.Tensor] = {}
        if layer.depthwise_kernel.trainable:
            # The same per-example tensor as in `norms` (the graph computes it once).
            sums[var_key(layer.depthwise_kernel)] = weighted_batch_sum(
                weights, self._depthwise(layer, calls))
        if layer.pointwise_kernel.trainable:
            d, g = self._stacked(calls)
            if self._ghost_is_cheaper(d, g):
                # [B, C*M, F] was not materialized: one matmul over every example's positions.
                flat_d = tf.reshape(d, [-1, d.shape[-1]])
                flat_g = tf.reshape(scale_examples(g, weights), [-1, g.shape[-1]])
                kernel = tf.matmul(flat_d, flat_g, transpose_a=True)
            else:
                kernel = weighted_batch_sum(weights, self._pointwise_per_example(d, g))
            sums[var_key(layer.pointwise_kernel)] = tf.reshape(kernel,
                                                               layer.pointwise_kernel.shape)
        if layer.use_bias and layer.bias.trainable:
            sums[var_key(layer.bias)] = weighted_batch_sum(weights, self._bias(calls))
        return sums
