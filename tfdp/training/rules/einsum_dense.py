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
from tfdp.training.rules.lora import LoraRule, uses_lora
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


def _kernel_grads(plan: _Plan, a, g):
    """[B, *kernel.shape]: each example's kernel gradient for one call."""
    return tf.einsum(f"{plan.inp},{plan.out}->{plan.batch}{plan.ker}", a, g)


def _bias_grads(plan: _Plan, g):
    """[B, bias letters]: each example's bias gradient (before reshaping to bias.shape)."""
    return tf.einsum(f"{plan.out}->{plan.batch}{plan.bias}", g)


def _ghost_operands(kshape, plan: _Plan, a, g):
    """a as [B, H, T, K_in] and g as [B, H, T, K_out] (T = positions), kernel-ordered."""
    groups = _static_size(kshape, plan.groups, plan.ker)
    k_in = _static_size(kshape, plan.contracted, plan.ker)
    k_out = _static_size(kshape, plan.new, plan.ker)
    batch = tf.shape(a)[0]
    a = tf.einsum(f"{plan.inp}->{plan.batch}{plan.groups}{plan.positions}{plan.contracted}", a)
    g = tf.einsum(f"{plan.out}->{plan.batch}{plan.groups}{plan.positions}{plan.new}", g)
    return (tf.reshape(a, tf.stack([batch, groups, -1, k_in])),
            tf.reshape(g, tf.stack([batch, groups, -1, k_out])))


def _use_ghost(kshape, plans_pairs) -> bool:
    """True when the ghost norm costs less than materializing [B, *kernel.shape]."""
    first = plans_pairs[0][0]
    k_in = _static_size(kshape, first.contracted, first.ker)
    k_out = _static_size(kshape, first.new, first.ker)
    if k_in is None or k_out is None:
        return False
    positions = 0
    for plan, (_, g) in plans_pairs:
        t = _static_size(tuple(g.shape), plan.positions, plan.out)
        if t is None:
            return False
        positions += t
    # Per group and example: ghost T^2 (K_in + K_out) multiply-adds and a T x T Gram
    # matrix; materializing T K_in K_out multiply-adds and a K_in x K_out gradient.
    return positions * (k_in + k_out) < k_in * k_out


def kernel_norms(kshape, plans_pairs, kind: str) -> tf.Tensor:
    """[B]: norm of each example's gradient of a kernel of shape `kshape`, summed over the
    calls' (plan, (a, g)): the ghost norm or the materialized gradient, the cheaper."""
    if kind == "l2" and _use_ghost(kshape, plans_pairs):
        pairs = [_ghost_operands(kshape, plan, a, g) for plan, (a, g) in plans_pairs]
        a = tf.concat([p[0] for p in pairs], axis=2) if len(pairs) > 1 else pairs[0][0]
        g = tf.concat([p[1] for p in pairs], axis=2) if len(pairs) > 1 else pairs[0][1]
        if a.shape[2] == 1:
            # One position: the gradient is one outer product per group.
            return tf.reduce_sum(tf.reduce_sum(tf.square(a), axis=[2, 3])
                                 * tf.reduce_sum(tf.square(g), axis=[2, 3]), axis=1)
        aa = tf.einsum("bhti,bhsi->bhts", a, a)
        gg = tf.einsum("bhto,bhso->bhts", g, g)
        return tf.reduce_sum(aa * gg, axis=[1, 2, 3])
    grads = tf.add_n([_kernel_grads(plan, a, g) for plan, (a, g) in plans_pairs])
    return per_example_norm(grads, kind)


def kernel_sum(plans_pairs, weights) -> tf.Tensor:
    """sum_b weights[b] * example b's kernel gradient, summed over the calls' (plan, (a, g))."""
    return tf.add_n([tf.einsum(f"{plan.inp},{plan.out}->{plan.ker}", a, scale_examples(g, weights))
                     for plan, (a, g) in plans_pairs])


@layer_rule(keras.layers.EinsumDense)
class EinsumDenseRule(LayerRule):
    """EinsumDense (not quantized): kernel gradients by einsum, ghost norm over positions."""

    def variant(self, layer):
        return EINSUM_DENSE_LORA if uses_lora(layer) else self

    def supports_config(self, layer) -> bool:
        """The class and its call, a plain float kernel variable, and an equation `_parse`
        handles (for the input rank, when known)."""
        if not super().supports(layer):
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

    def supports(self, layer):
        return self.supports_config(layer) and not uses_lora(layer)

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
        # so that the output is exactly the layer's; `layer.kernel` is Keras's effective
        # kernel (W + s A B under LoRA).
        z = keras.ops.einsum(layer.equation, a, layer.kernel)
        if layer.bias is not None:
            z = keras.ops.add(z, layer.bias)
        out = layer.activation(z) if layer.activation is not None else z
        return out, a, z

    def _trainable(self, layer):
        kernel = layer._kernel.trainable  # pylint: disable=protected-access
        bias = layer.bias is not None and layer.bias.trainable
        return kernel, bias

    def _plans_pairs(self, layer, calls):
        return [(self._plan(layer, a.shape.rank), (a, g)) for a, g in calls]

    def norms(self, layer, calls, kind):
        plans_pairs = self._plans_pairs(layer, calls)
        use_kernel, use_bias = self._trainable(layer)
        terms = []
        if use_kernel:
            kshape = tuple(layer._kernel.shape)  # pylint: disable=protected-access
            terms.append(kernel_norms(kshape, plans_pairs, kind))
        if use_bias:
            bias = tf.add_n([_bias_grads(plan, g) for plan, (_, g) in plans_pairs])
            terms.append(per_example_norm(bias, kind))
        if not terms:
            return tf.zeros(tf.shape(calls[0][0])[:1], calls[0][0].dtype)
        return tf.add_n(terms)

    def weighted_sums(self, layer, calls, weights):
        plans_pairs = self._plans_pairs(layer, calls)
        use_kernel, use_bias = self._trainable(layer)
        sums = {}
        if use_kernel:
            kernel = layer._kernel  # pylint: disable=protected-access
            sums[var_key(kernel)] = kernel_sum(plans_pairs, weights)
        if use_bias:
            bias = tf.add_n([tf.einsum(f"{plan.out}->{plan.bias}", scale_examples(g, weights))
                             for plan, (_, g) in plans_pairs])
            sums[var_key(layer.bias)] = tf.reshape(bias, layer.bias.shape)
        return sums


class _LoraPlan(NamedTuple):
    """A LoRA layer's letters: its plan, A's plan (z's last kernel letter l renamed rho)."""

    plan: _Plan
    factor: _Plan     # inp, ker[:-1] + rho -> out with l renamed rho
    last: str         # l
    rank: str         # rho
    others: str       # z's letters other than the batch and l, in output order


def _lora_plan(plan: _Plan) -> Optional[_LoraPlan]:
    """The LoRA plan, or None when the last kernel letter is not an output-only letter."""
    last = plan.ker[-1]
    if last not in plan.new:
        return None
    rank = next(c for c in string.ascii_letters if c not in plan.inp + plan.ker + plan.out)
    out = plan.out.replace(last, rank)
    factor = _parse(f"{plan.inp},{plan.ker[:-1]}{rank}->{out}", None, None)
    others = "".join(c for c in plan.out[1:] if c != last)
    return None if factor is None else _LoraPlan(plan, factor, last, rank, others)


class EinsumDenseLoraRule(LoraRule, EinsumDenseRule):
    """EinsumDense with Keras's LoRA: kernel W + s A B with A B over the kernel's last axis.

    That axis must be an output-only letter (as in MultiHeadAttention's projections,
    'abc,cde->abde' and 'abcd,cde->abe'); then u = einsum(a, A) and gB are z with that
    letter renamed to the rank's. Other equations take the fallback.
    """

    layer_types = (keras.layers.EinsumDense,)

    def supports_lora(self, layer):
        inp_ker, out = layer.equation.split("->")
        inp, ker = inp_ker.split(",")
        last = ker[-1]
        return last in out and last not in inp

    def _lora(self, layer, a) -> _LoraPlan:
        return _lora_plan(self._plan(layer, a.shape.rank))

    def forward(self, layer, inputs, *args, **kwargs):
        shape = getattr(inputs, "shape", None)
        plan = None if shape is None or shape.rank is None else self._plan(layer, shape.rank)
        if plan is None or _lora_plan(plan) is None:
            return None
        return super().forward(layer, inputs, *args, **kwargs)

    def rank_input(self, layer, a):
        lp = self._lora(layer, a)
        factor = tf.cast(layer.lora_kernel_a, a.dtype)
        return tf.einsum(f"{lp.factor.inp},{lp.factor.ker}->{lp.factor.out}", a, factor)

    def rank_gradient(self, layer, a, g):
        lp = self._lora(layer, a)
        b_factor = tf.cast(layer.lora_kernel_b, g.dtype)
        return tf.einsum(f"{lp.plan.out},{lp.rank}{lp.last}->{lp.factor.out}", g, b_factor)

    def rank_pairs(self, layer, a, u, g):
        lp = self._lora(layer, a)
        batch = lp.plan.batch
        return (tf.einsum(f"{lp.factor.out}->{batch}{lp.others}{lp.rank}", u),
                tf.einsum(f"{lp.plan.out}->{batch}{lp.others}{lp.last}", g))

    def _plans(self, layer, pairs, low_rank):
        plans = [self._lora(layer, a) for a, _ in pairs]
        return [(lp.factor if low_rank else lp.plan, pair) for lp, pair in zip(plans, pairs)]

    def kernel_norms(self, layer, pairs, kind, low_rank):
        variable = layer.lora_kernel_a if low_rank else self.frozen(layer)
        return kernel_norms(tuple(variable.shape), self._plans(layer, pairs, low_rank), kind)

    def kernel_sum(self, layer, pairs, weights, low_rank):
        return kernel_sum(self._plans(layer, pairs, low_rank), weights)

    def bias_gradients(self, layer, pairs):
        grads = [_bias_grads(self._plan(layer, a.shape.rank), g) for a, g in pairs]
        return tf.reshape(tf.add_n(grads), [-1, *layer.bias.shape])


EINSUM_DENSE_LORA = EinsumDenseLoraRule()
