"""PReLU: per-example alpha gradients from the negative part of the input.

The layer computes relu(x) - alpha * relu(-x), alpha broadcast over the shared axes
(every axis where alpha has size 1). With z the output and g = dL/dz, example b's
gradient is grad_alpha[b] = -(sum over the shared axes of g * relu(-x)).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfdp.training.rules.base import PerExampleGradientRule, sum_to_parameter, var_key
from tfdp.training.rules.registry import layer_rule


@layer_rule(keras.layers.PReLU)
class PReLURule(PerExampleGradientRule):
    """PReLU with any shared_axes."""

    def variables(self, layer):
        return [layer.alpha] if layer.alpha.trainable else []

    def forward(self, layer, inputs, *args, **kwargs):
        if isinstance(inputs, (tf.SparseTensor, tf.RaggedTensor)) or not hasattr(inputs, "shape"):
            return None
        x = tf.convert_to_tensor(inputs)
        if x.shape.rank is None or x.shape.rank != len(layer.alpha.shape) + 1:
            return None  # alpha would broadcast over the batch axis too
        # As PReLU.call: relu(x) + (-alpha) * relu(-x).
        pos = keras.activations.relu(x)
        negative_part = keras.activations.relu(-x)
        z = pos + -layer.alpha * negative_part
        return z, negative_part, z

    def per_example_gradients(self, layer, calls):
        alpha = layer.alpha
        kept = [i + 1 for i, d in enumerate(alpha.shape) if d != 1]
        parts = [-sum_to_parameter(g * negative_part, kept, alpha.shape)
                 for negative_part, g in calls]
        return {var_key(alpha): tf.cast(tf.add_n(parts), alpha.dtype)}
