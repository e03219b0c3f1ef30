"""Keras's LoRA (`layer.enable_lora(rank, lora_alpha=...)`): exact per-example gradients.

Keras's Dense, EinsumDense, Conv1D/2D/3D and Embedding form the effective kernel
K = W + s A B with s = lora_alpha / rank: W is frozen by `enable_lora`, A
[*K.shape[:-1], r] and B [r, K.shape[-1]] are trainable (Embedding's table is its K).
Their call is the plain layer's with K, so z = f(a, K) is linear in K and, with G[b] the
per-example gradient w.r.t. K (the plain rule's problem):

  grad_A[b] = s G[b] B^T (contracting K's last axis),   grad_B[b] = s A^T G[b].

Neither needs G[b]. K's last axis is a feature axis of z only (Dense's and a
convolution's output units, an embedding's width, an EinsumDense output-only letter),
so G[b] B^T is the plain problem with g = dL/dz taken through B^T (gB = g B^T, the
gradient a kernel of A's shape gets), and A^T G[b] = sum_t u_t g_t^T is an outer
product over every other axis of z, with u = f(a, A) the input taken through A alone.
A LoRA layer is therefore its plain rule's problem at rank r plus a Dense problem with r
inputs, both scaled by s, plus the bias (and W, if made trainable again).
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import keras
import tensorflow as tf

from tfdp.training.rules.base import (LayerRule, outer_product_norms, outer_product_sum,
                                      per_example_norm, position_sums, var_key,
                                      weighted_batch_sum)


def uses_lora(layer: keras.layers.Layer) -> bool:
    """True when `layer` computes with Keras's LoRA (enabled, or requested by `lora_rank`)."""
    return bool(getattr(layer, "lora_enabled", False) or getattr(layer, "lora_rank", None))


def _owner(cls: type, name: str) -> Optional[type]:
    return next((c for c in cls.__mro__ if name in vars(c)), None)


class LoraRule(LayerRule):
    """The LoRA variant of a plain rule: list it before the plain rule among the bases.

    The plain rule's `forward` already computes z with Keras's effective kernel; this
    mixin adds u = f(a, A) to what is captured and measures and sums W (if trainable),
    A, B and the bias. A subclass names the layer's attributes and implements the hooks
    (`rank_input`, `rank_gradient`, `kernel_norms`, `kernel_sum`; `rank_pairs` and
    `bias_gradients` when the defaults do not fit); the plain rule provides
    `supports_config(layer)`, its checks of the layer's configuration other than LoRA.
    """

    kernel_property = "kernel"          # the layer property that forms W + s A B
    frozen_name = "_kernel"             # the variable W
    factor_names = ("lora_kernel_a", "lora_kernel_b")

    def variant(self, layer):
        return self

    def supports_lora(self, layer) -> bool:
        """Extra conditions on the LoRA form (e.g. which kernel axis A B acts on)."""
        return True

    def supports(self, layer):
        # A subclass that redefines how the effective kernel is formed computes another function.
        same_kernel = any(isinstance(layer, t) and _owner(type(layer), self.kernel_property)
                          is _owner(t, self.kernel_property) for t in self.layer_types)
        return (uses_lora(layer) and same_kernel and self.supports_config(layer)
                and getattr(layer, "quantization_mode", None) is None
                and self.supports_lora(layer))

    # ----- the layer's pieces -----

    @staticmethod
    def scale(layer) -> float:
        """s = lora_alpha / rank, the factor Keras puts on A B."""
        return layer.lora_alpha / layer.lora_rank

    def factors(self, layer) -> Tuple[tf.Variable, tf.Variable]:
        """(A, B)."""
        return tuple(getattr(layer, name) for name in self.factor_names)

    def frozen(self, layer) -> tf.Variable:
        """W (frozen by enable_lora; included if the user made it trainable again)."""
        return getattr(layer, self.frozen_name)

    @staticmethod
    def bias(layer) -> Optional[tf.Variable]:
        bias = getattr(layer, "bias", None)
        return bias if bias is not None and bias.trainable else None

    def variables(self, layer):
        a_factor, b_factor = self.factors(layer)
        return [v for v in (self.frozen(layer), a_factor, b_factor, self.bias(layer))
                if v is not None and v.trainable]

    # ----- hooks -----

    def rank_input(self, layer, a) -> tf.Tensor:
        """u = f(a, A): the call's input taken through A alone (z's shape, last feature axis r)."""
        raise NotImplementedError

    def rank_gradient(self, layer, a, g) -> tf.Tensor:
        """gB = g B^T: the output gradient taken into rank space (u's shape)."""
        raise NotImplementedError

    def rank_pairs(self, layer, a, u, g) -> Tuple[tf.Tensor, tf.Tensor]:
        """(u, g) as [B, ..., r] and [B, ..., out] with matching positions (B's problem)."""
        return u, g

    def kernel_norms(self, layer, pairs, kind: str, low_rank: bool) -> tf.Tensor:
        """[B]: the plain kernel problem's norms for pairs (a, g); low_rank: A's, with g = gB."""
        raise NotImplementedError

    def kernel_sum(self, layer, pairs, weights, low_rank: bool) -> tf.Tensor:
        """sum_b weights[b] * the plain kernel problem's gradient (A's when low_rank)."""
        raise NotImplementedError

    def bias_gradients(self, layer, pairs) -> tf.Tensor:
        """[B, *bias.shape]: each example's bias gradient, summed over the calls' (a, g)."""
        return position_sums([g for _, g in pairs])

    # ----- the rule -----

    def forward(self, layer, inputs, *args, **kwargs):
        result = super().forward(layer, inputs, *args, **kwargs)
        if result is None:
            return None
        output, a, z = result
        return output, (a, self.rank_input(layer, a)), z

    def _parts(self, layer, calls):
        """The calls' (a, g) pairs, A's (a, gB) pairs and B's (u, g) pairs (None if frozen)."""
        a_factor, b_factor = self.factors(layer)
        pairs = [(a, g) for (a, _), g in calls]
        a_pairs = ([(a, self.rank_gradient(layer, a, g)) for a, g in pairs]
                   if a_factor.trainable else None)
        b_pairs = ([self.rank_pairs(layer, a, u, g) for (a, u), g in calls]
                   if b_factor.trainable else None)
        return pairs, a_pairs, b_pairs

    def norms(self, layer, calls, kind):
        s = self.scale(layer)
        factor = s * s if kind == "l2" else abs(s)
        pairs, a_pairs, b_pairs = self._parts(layer, calls)
        terms: List[tf.Tensor] = []
        if self.frozen(layer).trainable:
            terms.append(self.kernel_norms(layer, pairs, kind, low_rank=False))
        if a_pairs is not None:
            terms.append(factor * self.kernel_norms(layer, a_pairs, kind, low_rank=True))
        if b_pairs is not None:
            terms.append(factor * outer_product_norms(b_pairs, kind))
        if self.bias(layer) is not None:
            terms.append(per_example_norm(self.bias_gradients(layer, pairs), kind))
        if not terms:
            return tf.zeros(tf.shape(pairs[0][0])[:1], tf.float32)
        return tf.add_n([tf.cast(t, terms[0].dtype) for t in terms])

    def weighted_sums(self, layer, calls, weights):
        s = self.scale(layer)
        a_factor, b_factor = self.factors(layer)
        pairs, a_pairs, b_pairs = self._parts(layer, calls)
        sums = {}
        if self.frozen(layer).trainable:
            sums[var_key(self.frozen(layer))] = self.kernel_sum(layer, pairs, weights,
                                                                low_rank=False)
        if a_pairs is not None:
            sums[var_key(a_factor)] = s * self.kernel_sum(layer, a_pairs, weights, low_rank=True)
        if b_pairs is not None:
            sums[var_key(b_factor)] = s * outer_product_sum(b_pairs, weights)
        bias = self.bias(layer)
        if bias is not None:
            grads = self.bias_gradients(layer, pairs)
            sums[var_key(bias)] = tf.reshape(weighted_batch_sum(weights, grads), bias.shape)
        return sums


def last_axis_product(t: tf.Tensor, matrix: tf.Tensor, transpose: bool = False) -> tf.Tensor:
    """t @ matrix (or t @ matrix^T) over t's last axis, for a [B, ..., d] tensor of any rank."""
    matrix = tf.cast(matrix, t.dtype)
    if t.shape.rank == 2:
        return tf.matmul(t, matrix, transpose_b=transpose)
    return tf.tensordot(t, matrix, [[t.shape.rank - 1], [1 if transpose else 0]])
