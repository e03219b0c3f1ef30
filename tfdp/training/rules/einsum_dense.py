"""EinsumDense: per-example gradients of z = einsum(equation, a, W) (+ bias).

The layer's equation is parsed once per traced input rank, from its letters. With the
batch letter `b` (first letter of the input and of the output, absent from the kernel)
every other letter falls in one of five roles:

  positions   P   input and output, not kernel    (sequence axes: summed in the gradient)
  contracted  C   input and kernel, not output    (the kernel's "input" axes)
  new         N   kernel and output, not input    (the kernel's "output" axes)
  groups      H   input, kernel and output        (a separate map per group, e.g. per head)
  summed      S   input only                      (summed before the kernel is applied)

so example b's kernel gradient is grad[b][h, c, n] = sum_p (sum_s a[b, p, h, s, c]) g[b, p, h, n]:
with a reshaped to [B, H, T, K_in] and g to [B, H, T, K_out] (T = prod P, K_in = prod C,
K_out = prod N) it is the sum over positions of outer products, whose squared L2 norm
is also sum_h sum_{t,s} (a_ht . a_hs)(g_ht . g_hs) (the ghost norm), with no
[B, *kernel.shape] tensor. Which of the two is computed is chosen from the static
shapes when the step is traced. The bias gradient is g summed over every axis but the
batch and the bias axes.
"""

from __future__ import annotations

import math
import re
import string
from typing import NamedTuple, Optional

import keras
import tensorflow as tf

from tfdp.training.rules.base import LayerRule, per_example_norm, scale_examples, var_key
from tfdp.training.rules.registry import layer_rule


class _Plan(NamedTuple):
    """The equation with any ellipsis spelled out in fresh letters, and the letters' roles."""

    inp: str          # input letters, batch first
    ker: str          # kernel letters
    out: str          # output letters, batch first
    batch: str
    groups: str       # H, in kernel order
    contracted: str   # C, in kernel order
    new: str          # N, in kernel order
    positions: str    # P, in output order
    bias: str         # the bias axes' letters, in output order ("" without a bias)


_FORMS = (
    (re.compile(r"([a-zA-Z]+),([a-zA-Z]+)->([a-zA-Z]+)"), None),
    (re.compile(r"\.\.\.([a-zA-Z]+),([a-zA-Z]+)->\.\.\.([a-zA-Z]+)"), "left"),
    (re.compile(r"([a-zA-Z]{2,})\.\.\.,([a-zA-Z]+)->([a-zA-Z]+)\.\.\."), "right"),
)


def _parse(equation: str, bias_axes: Optional[str], rank: Optional[int]) -> Optional[_Plan]:
    """The plan of `equation` for an input of rank `rank`, or None if the rule cannot do it.

    `rank` None parses an equation without ellipsis only (its rank is its input's length).
    """
    if not isinstance(equation, str):
        return None
    for pattern, elided_side in _FORMS:
        match = pattern.fullmatch(equation)
        if match is not None:
            break
    else:
        return None
    inp, ker, out = match.groups()
    if elided_side is not None:
        if rank is None or rank < len(inp):
            return None
        fresh = [c for c in string.ascii_letters if c not in inp + ker + out]
        ellipsis = "".join(fresh[:rank - len(inp)])
        if elided_side == "left":
            inp, out = ellipsis + inp, ellipsis + out
        else:
            inp, out = inp + ellipsis, out + ellipsis
    elif rank is not None and rank != len(inp):
        return None
    # Repeated letters in one operand (diagonals) are not handled.
    if any(len(set(s)) != len(s) for s in (inp, ker, out)):
        return None
    batch = inp[0]
    if out[0] != batch or batch in ker:
        return None
    in_set, ker_set, out_set = set(inp), set(ker), set(out)
    # Every output letter comes from an operand, every kernel letter meets the input or output.
    if not out_set <= in_set | ker_set or not ker_set <= in_set | out_set:
        return None
    bias = bias_axes or ""
    if len(set(bias)) != len(bias) or not set(bias) <= out_set or batch in bias:
        return None
    return _Plan(
        inp=inp, ker=ker, out=out, batch=batch,
        groups="".join(c for c in ker if c in in_set and c in out_set),
        contracted="".join(c for c in ker if c in in_set and c not in out_set),
        new="".join(c for c in ker if c in out_set and c not in in_set),
        positions="".join(c for c in out[1:] if c in in_set and c not in ker_set),
        bias="".join(c for c in out if c in bias),
    )


def _input_rank(layer) -> Optional[int]:
    spec = getattr(layer, "input_spec", None)
    return getattr(spec, "ndim", None) if spec is not None else None


def _static_size(shape, letters: str, spec: str) -> Optional[int]:
    """The product of `shape`'s dims for `letters` (axes named by `spec`), None if unknown."""
    dims = [shape[spec.index(c)] for c in letters]
    return None if None in dims else math.prod(dims)


@layer_rule(keras.layers.EinsumDense)
class EinsumDenseRule(LayerRule):
    """EinsumDense (no LoRA, not quantized): kernel gradients by einsum, ghost norm over positions."""

    def supports(self, layer):
        if not super().supports(layer):
            return False
        if getattr(layer, "lora_enabled", False) or getattr(layer, "lora_rank", None):
            return False
        if getattr(layer, "quantization_mode", None) is not None:
            return False
        if layer.built and not isinstance(getattr(layer, "_kernel", None), keras.Variable):
            return False
        rank = _input_rank(layer)
        if rank is not None or "..." not in layer.equation:
            return _parse(layer.equation, layer.bias_axes, rank) is not None
        # An ellipsis and no known input rank yet: `forward` checks each call's rank.
        return any(_parse(layer.equation, layer.bias_axes, r) is not None for r in range(1, 9))

    def variables(self, layer):
        # `_kernel` is the variable itself (`kernel` is a property that may compute a tensor).
        return [v for v in (getattr(layer, "_kernel", None), getattr(layer, "bias", None))
                if v is not None and v.trainable]

    @staticmethod
    def _plan(layer, rank) -> Optional[_Plan]:
        return _parse(layer.equation, layer.bias_axes, rank)

    def forward(self, layer, inputs, *args, **kwargs):
        if isinstance(inputs, (tf.SparseTensor, tf.RaggedTensor, list, tuple, dict)):
            return None
        a = tf.convert_to_tensor(inputs)
        if a.shape.rank is None or self._plan(layer, a.shape.rank) is None:
            return None
        # The layer's own ops (keras.ops.einsum picks matmul forms for common equations),
        # so that the output is exactly the layer's.
        z = keras.ops.einsum(layer.equation, a, layer.kernel)
        if layer.bias is not None:
            z = keras.ops.add(z, layer.bias)
        out = layer.activation(z) if layer.activation is not None else z
        return out, a, z

    # ----- per-example pieces -----

    def _trainable(self, layer):
        kernel = layer._kernel.trainable  # pylint: disable=protected-access
        bias = layer.bias is not None and layer.bias.trainable
        return kernel, bias

    @staticmethod
    def _kernel_grads(plan, a, g):
        """[B, *kernel.shape]: each example's kernel gradient for one call."""
        return tf.einsum(f"{plan.inp},{plan.out}->{plan.batch}{plan.ker}", a, g)

    @staticmethod
    def _bias_grads(plan, g):
        """[B, bias letters]: each example's bias gradient (before reshaping to bias.shape)."""
        return tf.einsum(f"{plan.out}->{plan.batch}{plan.bias}", g)

    @staticmethod
    def _ghost_operands(layer, plan, a, g):
        """a as [B, H, T, K_in] and g as [B, H, T, K_out] (T = positions), kernel-ordered."""
        kshape = tuple(layer._kernel.shape)  # pylint: disable=protected-access
        groups = _static_size(kshape, plan.groups, plan.ker)
        k_in = _static_size(kshape, plan.contracted, plan.ker)
        k_out = _static_size(kshape, plan.new, plan.ker)
        batch = tf.shape(a)[0]
        a = tf.einsum(f"{plan.inp}->{plan.batch}{plan.groups}{plan.positions}{plan.contracted}", a)
        g = tf.einsum(f"{plan.out}->{plan.batch}{plan.groups}{plan.positions}{plan.new}", g)
        return (tf.reshape(a, tf.stack([batch, groups, -1, k_in])),
                tf.reshape(g, tf.stack([batch, groups, -1, k_out])))

    def _use_ghost(self, layer, plans_calls) -> bool:
        """True when the ghost norm costs less than materializing [B, *kernel.shape]."""
        kshape = tuple(layer._kernel.shape)  # pylint: disable=protected-access
        first = plans_calls[0][0]
        k_in = _static_size(kshape, first.contracted, first.ker)
        k_out = _static_size(kshape, first.new, first.ker)
        if k_in is None or k_out is None:
            return False
        positions = 0
        for plan, (_, g) in plans_calls:
            t = _static_size(tuple(g.shape), plan.positions, plan.out)
            if t is None:
                return False
            positions += t
        # Per group and example: ghost T^2 (K_in + K_out) multiply-adds and a T x T Gram
        # matrix; materializing T K_in K_out multiply-adds and a K_in x K_out gradient.
        return positions * (k_in + k_out) < k_in * k_out

    def _plans_calls(self, layer, calls):
        return [(self._plan(layer, a.shape.rank), (a, g)) for a, g in calls]

    def norms(self, layer, calls, kind):
        plans_calls = self._plans_calls(layer, calls)
        use_kernel, use_bias = self._trainable(layer)
        total = None
        if use_kernel:
            if kind == "l2" and self._use_ghost(layer, plans_calls):
                pairs = [self._ghost_operands(layer, plan, a, g) for plan, (a, g) in plans_calls]
                a = tf.concat([p[0] for p in pairs], axis=2) if len(pairs) > 1 else pairs[0][0]
                g = tf.concat([p[1] for p in pairs], axis=2) if len(pairs) > 1 else pairs[0][1]
                if a.shape[2] == 1:
                    # One position: the gradient is one outer product per group.
                    total = tf.reduce_sum(tf.reduce_sum(tf.square(a), axis=[2, 3])
                                          * tf.reduce_sum(tf.square(g), axis=[2, 3]), axis=1)
                else:
                    aa = tf.einsum("bhti,bhsi->bhts", a, a)
                    gg = tf.einsum("bhto,bhso->bhts", g, g)
                    total = tf.reduce_sum(aa * gg, axis=[1, 2, 3])
            else:
                grads = tf.add_n([self._kernel_grads(plan, a, g) for plan, (a, g) in plans_calls])
                total = per_example_norm(grads, kind)
        if use_bias:
            bias = tf.add_n([self._bias_grads(plan, g) for plan, (_, g) in plans_calls])
            bias_norm = per_example_norm(bias, kind)
            total = bias_norm if total is None else total + bias_norm
        if total is None:
            return tf.zeros(tf.shape(calls[0][0])[:1], calls[0][0].dtype)
        return total

    def weighted_sums(self, layer, calls, weights):
        plans_calls = self._plans_calls(layer, calls)
        use_kernel, use_bias = self._trainable(layer)
        kernel_sum, bias_sum = [], []
        for plan, (a, g) in plans_calls:
            gw = scale_examples(g, weights)
            if use_kernel:
                kernel_sum.append(tf.einsum(f"{plan.inp},{plan.out}->{plan.ker}", a, gw))
            if use_bias:
                bias_sum.append(tf.einsum(f"{plan.out}->{plan.bias}", gw))
        sums = {}
        if use_kernel:
            kernel = layer._kernel  # pylint: disable=protected-access
            sums[var_key(kernel)] = tf.add_n(kernel_sum)
        if use_bias:
            sums[var_key(layer.bias)] = tf.reshape(tf.add_n(bias_sum), layer.bias.shape)
        return sums
