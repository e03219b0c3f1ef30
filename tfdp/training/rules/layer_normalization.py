"""LayerNormalization: per-example gamma/beta gradients from the normalized input.

The forward pass re-implements `keras.ops.layer_normalization` as the layer calls it
(TensorFlow backend): statistics in at least float32, `inv = rsqrt(variance + epsilon)`,
`inv *= gamma`, `outputs = x * inv + (beta - mean * inv)`, then the casts back to the input
dtype and the layer's compute dtype. `z` is that float output before the casts, so
`g = dL/dz` gives, for every example b,

    grad_gamma[b] = sum over the non-normalized positions of g * x_hat,
    grad_beta[b]  = sum over the non-normalized positions of g,

with x_hat = (x - mean) * rsqrt(variance + epsilon) (x * rsqrt(variance + epsilon) for the
deprecated `rms_scaling=True`, which Keras scales by the variance, not the mean square).
Any set of axes works as long as it leaves out the batch axis; gamma/beta span the
normalized axes in Keras's order (sorted axis values, so [-1, 1] puts the last axis first:
Keras then *reshapes*, not transposes, gamma onto the input, and so does this rule).
"""

from __future__ import annotations

from typing import List, Optional

import keras
import tensorflow as tf
from keras import ops

from tfdp.training.rules.base import PerExampleGradientRule, sum_to_parameter, var_key
from tfdp.training.rules.registry import layer_rule


def _sorted_axes(layer) -> List[int]:
    """The layer's axes as Keras uses them in call: sorted as given (negatives stay negative)."""
    axis = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    return sorted(int(a) for a in axis)


def _positions(layer, ndims: int) -> Optional[List[int]]:
    """The normalized axes as non-negative positions, or None when the rule cannot do them."""
    axes = _sorted_axes(layer)
    if not axes or any(not -ndims <= a < ndims for a in axes):
        return None
    positions = [a % ndims for a in axes]
    if 0 in positions or len(set(positions)) != len(positions):
        return None  # statistics over the batch mix examples; duplicated axes break Keras too
    return positions


@layer_rule(keras.layers.LayerNormalization)
class LayerNormalizationRule(PerExampleGradientRule):
    """LayerNormalization over any axes but the batch, scale/center on or off, rms_scaling."""

    def supports(self, layer):
        if not super().supports(layer):
            return False
        if keras.config.backend() != "tensorflow":
            return False
        # The batch axis (0) among the normalized ones couples examples; a negative axis that
        # resolves to 0 is only known with the input's rank, and `forward` declines it.
        return 0 not in _sorted_axes(layer)

    def variables(self, layer):
        return [v for v in (layer.gamma, layer.beta) if v is not None and v.trainable]

    def forward(self, layer, inputs, *args, **kwargs):
        if isinstance(inputs, (tf.SparseTensor, tf.RaggedTensor)) or not hasattr(inputs, "shape"):
            return None
        x = tf.convert_to_tensor(inputs)
        ndims = x.shape.rank
        if ndims is None:
            return None
        positions = _positions(layer, ndims)
        if positions is None:
            return None
        axis = _sorted_axes(layer)
        input_shape = x.shape
        broadcast_shape = [1] * ndims
        for dim in axis:
            if input_shape[dim] is None:
                return None
            broadcast_shape[dim] = input_shape[dim]

        epsilon = layer.epsilon if layer.epsilon is not None else keras.config.epsilon()
        original_dtype = keras.backend.standardize_dtype(x.dtype)
        compute_dtype = keras.backend.result_type(x.dtype, "float32")
        x = ops.convert_to_tensor(x, dtype=compute_dtype)
        gamma = None if layer.gamma is None else ops.convert_to_tensor(layer.gamma, x.dtype)
        beta = None if layer.beta is None else ops.convert_to_tensor(layer.beta, x.dtype)

        def broadcast(v):
            if v is not None and len(v.shape) != ndims and axis != [ndims - 1]:
                return ops.reshape(v, broadcast_shape)
            return v

        if getattr(layer, "rms_scaling", False):
            variance = ops.var(x, axis=axis, keepdims=True)
            inv = ops.rsqrt(variance + epsilon)
            outputs = x * inv
            a = (x, inv)
            if gamma is not None:
                outputs = outputs * ops.cast(broadcast(gamma), x.dtype)
        else:
            mean, variance = ops.moments(x, axes=axis, keepdims=True)
            gamma, beta = broadcast(gamma), broadcast(beta)
            inv = ops.rsqrt(variance + epsilon)
            a = (x, mean, inv)
            if gamma is not None:
                inv = inv * gamma
            res = -mean * inv
            if beta is not None:
                res = res + beta
            outputs = x * inv + res
        z = outputs
        output = ops.cast(ops.cast(outputs, original_dtype), layer.compute_dtype)
        return output, a, z

    def per_example_gradients(self, layer, calls):
        gamma = layer.gamma if layer.gamma is not None and layer.gamma.trainable else None
        beta = layer.beta if layer.beta is not None and layer.beta.trainable else None
        grads = {}
        for a, g in calls:
            positions = _positions(layer, g.shape.rank)
            if gamma is not None:
                if len(a) == 2:  # rms_scaling: x * rsqrt(variance + epsilon)
                    x_hat = a[0] * a[1]
                else:
                    x_hat = (a[0] - a[1]) * a[2]
                grads.setdefault(var_key(gamma), []).append(
                    tf.cast(sum_to_parameter(g * x_hat, positions, gamma.shape), gamma.dtype))
            if beta is not None:
                grads.setdefault(var_key(beta), []).append(
                    tf.cast(sum_to_parameter(g, positions, beta.shape), beta.dtype))
        return {key: tf.add_n(parts) for key, parts in grads.items()}
