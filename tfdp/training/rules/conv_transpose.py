"""Conv1DTranspose/Conv2DTranspose/Conv3DTranspose: the convolution's problem, roles swapped.

A transposed convolution z = conv_transpose(a, K) is the input gradient of the convolution
u -> conv(u, K) with the same strides, dilations and padding (u has z's shape, K is
[*k, filters, c_in]). By adjointness <g, conv_transpose(a, K)> = <conv(g, K), a>, so
example b's kernel gradient is the filter gradient of that convolution with input g[b]
and output gradient a[b]: sum_p patch_p(g[b]) a[b, p]^T over a's positions p. The patches,
ghost norm, batch-folded depthwise gradients and filter gradient of conv.py apply as they
are to the pair (g, a).
"""

from __future__ import annotations

from typing import List

import keras
import tensorflow as tf

from tfdp.training.rules.base import LayerRule, per_example_norm, var_key
from tfdp.training.rules.conv import (ConvGeometry, filter_gradient, kernel_norms,
                                      position_sums, scale_batch, trainable_kernel_and_bias)
from tfdp.training.rules.registry import layer_rule


@layer_rule(keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
            keras.layers.Conv3DTranspose)
class ConvTransposeRule(LayerRule):
    """Conv1D/2D/3DTranspose (channels last): kernel gradients as filter gradients of (g, a)."""

    def supports(self, layer):
        return super().supports(layer) and layer.data_format == "channels_last"

    def variables(self, layer):
        return [v for v in trainable_kernel_and_bias(layer) if v is not None]

    @staticmethod
    def geometry(layer) -> ConvGeometry:
        return ConvGeometry(tuple(layer.kernel_size), tuple(layer.strides),
                            tuple(layer.dilation_rate), layer.padding.upper())

    def forward(self, layer, inputs, *args, **kwargs):
        if isinstance(inputs, (tf.SparseTensor, tf.RaggedTensor)):
            return None
        a = tf.convert_to_tensor(inputs)
        # The layer's own op: Keras derives the output shape from padding and output_padding.
        z = keras.ops.conv_transpose(
            a, layer.kernel, strides=list(layer.strides), padding=layer.padding,
            output_padding=layer.output_padding, dilation_rate=layer.dilation_rate,
            data_format=layer.data_format,
        )
        if layer.use_bias:
            z = tf.nn.bias_add(z, layer.bias)
        return layer.activation(z), a, z

    def norms(self, layer, calls, kind):
        kernel, bias = trainable_kernel_and_bias(layer)
        terms: List[tf.Tensor] = []
        if kernel is not None:
            terms.append(kernel_norms(self.geometry(layer), [(g, a) for a, g in calls], kind))
        if bias is not None:
            terms.append(per_example_norm(position_sums([g for _, g in calls]), kind))
        return tf.add_n(terms)

    def weighted_sums(self, layer, calls, weights):
        kernel, bias = trainable_kernel_and_bias(layer)
        sums = {}
        if kernel is not None:
            geometry = self.geometry(layer)
            # a is the smaller side (the layer's input): reweight it rather than g.
            sums[var_key(kernel)] = tf.add_n(
                [filter_gradient(geometry, g, scale_batch(a, weights), kernel.shape)
                 for a, g in calls])
        if bias is not None:
            sums[var_key(bias)] = tf.reduce_sum(
                position_sums([scale_batch(g, weights) for _, g in calls]), axis=0)
        return sums
