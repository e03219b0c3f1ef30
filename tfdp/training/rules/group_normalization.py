"""GroupNormalization: per-example gamma/beta gradients from the group-normalized input.

The forward pass re-implements the layer's call (reshape the channel axis into
[groups, channels // groups], statistics in at least float32 over every non-batch axis
but the group axis, `inv = rsqrt(variance + epsilon) * gamma`,
`outputs = x * inv + (beta - mean * inv)`, cast back, reshape to the input's shape).
`z` is that grouped float output before the casts, so with x_hat = (x - mean) * rsqrt(
variance + epsilon), example b's gradients are sums over the positions of each channel:

    grad_gamma[b, c] = sum_t g[b, t, c] * x_hat[b, t, c],   grad_beta[b, c] = sum_t g[b, t, c].

Any `groups` (-1 = instance normalization) and any channel axis but the batch axis work.
"""

from __future__ import annotations

from typing import List, Optional

import keras
import tensorflow as tf
from keras import ops

from tfdp.training.rules.base import PerExampleGradientRule, sum_to_parameter, var_key
from tfdp.training.rules.registry import layer_rule


def _kept_axes(axis: int, ndims: int) -> Optional[List[int]]:
    """The grouped tensor's [groups, channels // groups] axes, as Keras's broadcast shape has them."""
    if not -ndims <= axis < ndims or axis % ndims == 0:
        return None
    marks = ["other"] * ndims
    marks[axis] = "channel"
    marks.insert(axis, "group")
    return [i for i, m in enumerate(marks) if m != "other"]


@layer_rule(keras.layers.GroupNormalization)
class GroupNormalizationRule(PerExampleGradientRule):
    """GroupNormalization (any groups, any channel axis but the batch, scale/center on or off)."""

    def supports(self, layer):
        return (super().supports(layer) and keras.config.backend() == "tensorflow"
                and isinstance(layer.axis, int) and layer.axis != 0)

    def variables(self, layer):
        return [v for v in (layer.gamma, layer.beta) if v is not None and v.trainable]

    def forward(self, layer, inputs, *args, **kwargs):
        if isinstance(inputs, (tf.SparseTensor, tf.RaggedTensor)) or not hasattr(inputs, "shape"):
            return None
        inputs = tf.convert_to_tensor(inputs)
        ndims = inputs.shape.rank
        if ndims is None or _kept_axes(layer.axis, ndims) is None:
            return None
        channels = inputs.shape[layer.axis]
        if channels is None or channels % layer.groups != 0:
            return None
        groups, axis = layer.groups, layer.axis

        # Into groups, as GroupNormalization._reshape_into_groups.
        input_shape = ops.shape(inputs)
        group_shape = list(inputs.shape)
        group_shape[0] = -1
        for i, e in enumerate(group_shape[1:]):
            if e is None:
                group_shape[i + 1] = input_shape[i + 1]
        group_shape[axis] = input_shape[axis] // groups
        group_shape.insert(axis, groups)
        reshaped = ops.reshape(inputs, group_shape)

        # The normalization, as GroupNormalization._apply_normalization.
        inputs_dtype = reshaped.dtype
        compute_dtype = keras.backend.result_type(inputs_dtype, "float32")
        reshaped = ops.cast(reshaped, compute_dtype)
        reduction_axes = list(range(1, len(reshaped.shape)))
        reduction_axes.pop(-2 if axis == -1 else axis - 1)
        broadcast_shape = [1] * ndims
        broadcast_shape[axis] = channels // groups
        broadcast_shape.insert(axis, groups)
        mean, variance = ops.moments(reshaped, axes=reduction_axes, keepdims=True)
        inv = ops.rsqrt(variance + layer.epsilon)
        a = (reshaped, mean, inv)
        if layer.scale:
            gamma = ops.cast(ops.reshape(layer.gamma, broadcast_shape), reshaped.dtype)
            inv = inv * gamma
        res = -mean * inv
        if layer.center:
            beta = ops.cast(ops.reshape(layer.beta, broadcast_shape), reshaped.dtype)
            res = res + beta
        z = reshaped * inv + res
        normalized = ops.cast(z, inputs_dtype)
        output = ops.cast(ops.reshape(normalized, ops.shape(inputs)), layer.compute_dtype)
        return output, a, z

    def per_example_gradients(self, layer, calls):
        gamma = layer.gamma if layer.gamma is not None and layer.gamma.trainable else None
        beta = layer.beta if layer.beta is not None and layer.beta.trainable else None
        grads = {}
        for (x, mean, inv), g in calls:
            kept = _kept_axes(layer.axis, g.shape.rank - 1)
            if gamma is not None:
                x_hat = (x - mean) * inv
                grads.setdefault(var_key(gamma), []).append(
                    tf.cast(sum_to_parameter(g * x_hat, kept, gamma.shape), gamma.dtype))
            if beta is not None:
                grads.setdefault(var_key(beta), []).append(
                    tf.cast(sum_to_parameter(g, kept, beta.shape), beta.dtype))
        return {key: tf.add_n(parts) for key, parts in grads.items()}
