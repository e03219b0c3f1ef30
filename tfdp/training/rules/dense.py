"""Dense: per-example kernel gradients are outer products (over positions: ghost norm or
materialized, the cheaper by the static shapes); with Keras's LoRA, the factors' too."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfdp.training.rules.base import (LayerRule, outer_product_norms, outer_product_sum,
                                      per_example_norm, position_sums, var_key)
from tfdp.training.rules.lora import LoraRule, last_axis_product, uses_lora
from tfdp.training.rules.registry import layer_rule


def _kernel(layer):
    return layer.kernel if layer.kernel.trainable else None


def _bias(layer):
    return layer.bias if layer.use_bias and layer.bias.trainable else None


@layer_rule(keras.layers.Dense)
class DenseRule(LayerRule):
    """Dense: grad_W[b] = sum_t a[b,t] g[b,t]^T, grad_bias[b] = sum_t g[b,t]."""

    def variant(self, layer):
        return DENSE_LORA if uses_lora(layer) else self

    def supports_config(self, layer) -> bool:
        """The class and its call; quantized kernels compute a different function of W."""
        return super().supports(layer) and not getattr(layer, "quantization_mode", None)

    def supports(self, layer):
        return self.supports_config(layer) and not uses_lora(layer)

    def forward(self, layer, inputs, *args, **kwargs):
        if isinstance(inputs, (tf.SparseTensor, tf.RaggedTensor)):
            return None
        a = tf.convert_to_tensor(inputs)
        # `layer.kernel` is Keras's effective kernel (W + s A B under LoRA).
        if a.shape.rank == 2:
            z = tf.matmul(a, layer.kernel)
        else:
            z = tf.tensordot(a, layer.kernel, [[a.shape.rank - 1], [0]])
        if layer.use_bias:
            z = tf.nn.bias_add(z, layer.bias)
        return layer.activation(z), a, z

    def norms(self, layer, calls, kind):
        terms = []
        if _kernel(layer) is not None:
            terms.append(outer_product_norms(calls, kind))
        if _bias(layer) is not None:
            terms.append(per_example_norm(position_sums([g for _, g in calls]), kind))
        return tf.add_n(terms)

    def weighted_sums(self, layer, calls, weights):
        sums = {}
        if _kernel(layer) is not None:
            sums[var_key(layer.kernel)] = outer_product_sum(calls, weights)
        bias = _bias(layer)
        if bias is not None:
            gw = [g * tf.reshape(tf.cast(weights, g.dtype), [-1] + [1] * (g.shape.rank - 1))
                  for _, g in calls]
            sums[var_key(bias)] = tf.reduce_sum(position_sums(gw), axis=0)
        return sums


class DenseLoraRule(LoraRule, DenseRule):
    """Dense with Keras's LoRA: z = a (W + s A B) (+ bias); A [in, r], B [r, out]."""

    layer_types = (keras.layers.Dense,)

    def rank_input(self, layer, a):
        return last_axis_product(a, layer.lora_kernel_a)

    def rank_gradient(self, layer, a, g):
        return last_axis_product(g, layer.lora_kernel_b, transpose=True)

    def kernel_norms(self, layer, pairs, kind, low_rank):
        return outer_product_norms(pairs, kind)

    def kernel_sum(self, layer, pairs, weights, low_rank):
        return outer_product_sum(pairs, weights)


DENSE_LORA = DenseLoraRule()
