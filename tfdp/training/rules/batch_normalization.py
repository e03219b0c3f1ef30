"""BatchNormalization in inference mode: per-example gamma/beta gradients, per channel.

A BatchNormalization that runs on its moving statistics (Keras 3 runs it so when the
layer is frozen, or when its call passes `training=False`) mixes nothing: each example
is normalized with the same constants,

    z = x * inv + (beta - mean * inv),   inv = gamma * rsqrt(moving_variance + epsilon),

computed in at least float32 by `keras.ops.batch_normalization`, as the layer's call does.
With x_hat = (x - moving_mean) * rsqrt(moving_variance + epsilon) and g = dL/dz, example
b's gradients are sums over the positions of each channel:

    grad_gamma[b, c] = sum_t g[b, t, c] * x_hat[b, t, c],   grad_beta[b, c] = sum_t g[b, t, c].

The rule only sees a trainable layer (a frozen one has no trainable variables), so it
handles the calls of a trainable layer made with `training=False` (a subclassed model or
layer calling `bn(x, training=False)`). A call in training mode (batch statistics, moving
statistics updated) mixes examples: the rule declines it, and the model check has
refused such a model before any step (`tfdp.training.model_check`).
"""

from __future__ import annotations

from typing import Any, Optional

import keras
import tensorflow as tf
from keras import ops

from tfdp.training.rules.base import PerExampleGradientRule, sum_to_parameter, var_key
from tfdp.training.rules.registry import layer_rule


def call_training(args: tuple, kwargs: dict) -> Any:
    """The `training` argument of a BatchNormalization call(inputs, training=None, mask=None)."""
    if "training" in kwargs:
        return kwargs["training"]
    return args[0] if args else None


def runs_in_inference_mode(layer: keras.layers.BatchNormalization, training: Any) -> bool:
    """Whether this call uses the moving statistics and updates nothing (as BN.call decides:
    batch statistics only when `training and layer.trainable`). A symbolic `training` is
    not decidable when the step is traced: False."""
    if not layer.trainable:
        return True
    if isinstance(training, (tf.Tensor, tf.Variable, keras.Variable)):
        return False
    return not training


def _channel_axis(layer, ndims: int) -> Optional[int]:
    axis = layer.axis
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            return None
        axis = axis[0]
    if not -ndims <= int(axis) < ndims or int(axis) % ndims == 0:
        return None
    return int(axis) % ndims


@layer_rule(keras.layers.BatchNormalization)
class BatchNormalizationRule(PerExampleGradientRule):
    """BatchNormalization called in inference mode (scale/center on or off, any channel axis
    but the batch)."""

    def supports(self, layer):
        return super().supports(layer) and keras.config.backend() == "tensorflow"

    def variables(self, layer):
        return [v for v in (layer.gamma, layer.beta) if v is not None and v.trainable]

    def forward(self, layer, inputs, *args, **kwargs):
        if not runs_in_inference_mode(layer, call_training(args, kwargs)):
            return None  # batch statistics: mixes examples (the model check refuses it)
        if isinstance(inputs, (tf.SparseTensor, tf.RaggedTensor)) or not hasattr(inputs, "shape"):
            return None
        x = tf.convert_to_tensor(inputs)
        ndims = x.shape.rank
        if ndims is None or _channel_axis(layer, ndims) is None:
            return None
        axis = _channel_axis(layer, ndims)
        # As BatchNormalization.call in inference mode.
        x = ops.cast(x, keras.backend.result_type(x.dtype, "float32"))
        mean = ops.cast(layer.moving_mean, x.dtype)
        variance = ops.cast(layer.moving_variance, x.dtype)
        gamma = ops.cast(layer.gamma, x.dtype) if layer.scale else None
        beta = ops.cast(layer.beta, x.dtype) if layer.center else None
        z = ops.batch_normalization(x=x, mean=mean, variance=variance, axis=layer.axis,
                                    offset=beta, scale=gamma, epsilon=layer.epsilon)
        shape = [1] * ndims
        shape[axis] = -1
        x_hat = (x - tf.reshape(mean, shape)) * tf.reshape(
            ops.rsqrt(variance + layer.epsilon), shape)
        return ops.cast(z, layer.compute_dtype), (x_hat, axis), z

    def per_example_gradients(self, layer, calls):
        gamma = layer.gamma if layer.gamma is not None and layer.gamma.trainable else None
        beta = layer.beta if layer.beta is not None and layer.beta.trainable else None
        grads = {}
        for (x_hat, axis), g in calls:
            if gamma is not None:
                grads.setdefault(var_key(gamma), []).append(
                    tf.cast(sum_to_parameter(g * x_hat, [axis], gamma.shape), gamma.dtype))
            if beta is not None:
                grads.setdefault(var_key(beta), []).append(
                    tf.cast(sum_to_parameter(g, [axis], beta.shape), beta.dtype))
        return {key: tf.add_n(parts) for key, parts in grads.items()}
