"""ConvNeXt's LayerScale (keras.applications): per-example gradients of its per-channel scale.

The layer computes z = x * gamma, gamma of shape [C] broadcast over every axis but the last.
With g = dL/dz, example b's gradient is grad_gamma[b] = sum over the non-channel axes of g * x.
"""

from __future__ import annotations

import tensorflow as tf

from tfdp.training.rules.base import PerExampleGradientRule, sum_to_parameter, var_key
from tfdp.training.rules.registry import layer_rule

try:  # not exported by keras.applications: its module path could move
    from keras.src.applications.convnext import LayerScale
except ImportError:  # pragma: no cover - a Keras without it: no rule, the fallback applies
    LayerScale = None


if LayerScale is not None:

    @layer_rule(LayerScale)
    class LayerScaleRule(PerExampleGradientRule):
        """ConvNeXt's LayerScale: one scale per channel (the last axis)."""

        def variables(self, layer):
            return [layer.gamma] if layer.gamma.trainable else []

        def forward(self, layer, inputs, *args, **kwargs):
            if isinstance(inputs, (tf.SparseTensor, tf.RaggedTensor)) or not hasattr(inputs,
                                                                                     "shape"):
                return None
            x = tf.convert_to_tensor(inputs)
            if x.shape.rank is None or x.shape.rank < 2:
                return None  # gamma would scale the batch axis
            z = x * layer.gamma  # as LayerScale.call
            return z, x, z

        def per_example_gradients(self, layer, calls):
            gamma = layer.gamma
            parts = [sum_to_parameter(g * x, [x.shape.rank - 1], gamma.shape)
                     for x, g in calls]
            return {var_key(gamma): tf.cast(tf.add_n(parts), gamma.dtype)}
