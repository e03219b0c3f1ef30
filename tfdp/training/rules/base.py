"""The protocol of a per-example gradient rule, and the tensor helpers the rules share.

For a layer whose output (before activation) is z = f(a, W), the gradient of example
b's loss with respect to W depends on a[b] and g[b] = dL/dz[b] only, where L is the
sum of the per-example losses. A rule re-runs its layer's forward pass so that `z` is
a tensor the tape can differentiate to, then turns the captured pairs (a, g) into
per-example norms and into the weighted sum sum_b w_b * grad_b, without a second
backward pass. A layer called several times (shared weights) contributes the sum of
its calls: every method receives all of a layer's calls of one step.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import keras
import tensorflow as tf

# One call of a layer: (what its forward captured, the gradient of the per-example losses'
# sum w.r.t. its z). Both may be nests of tensors; every tensor has the batch as axis 0.
Call = Tuple[Any, Any]


def var_key(variable) -> int:
    """A hashable identity of a variable: the same for a Keras variable and its tf.Variable."""
    return id(variable.value) if isinstance(variable, keras.Variable) else id(variable)


def flatten_positions(t: tf.Tensor) -> tf.Tensor:
    """[B, ..., d] -> [B, T, d]: every position between batch and features in one axis."""
    shape = tf.shape(t)
    return tf.reshape(t, [shape[0], -1, shape[-1]])


def sq_norm(t: tf.Tensor) -> tf.Tensor:
    """Per-example squared L2 norm of a [B, ...] tensor."""
    return tf.reduce_sum(tf.reshape(tf.square(t), [tf.shape(t)[0], -1]), axis=1)


def l1_norm(t: tf.Tensor) -> tf.Tensor:
    """Per-example L1 norm of a [B, ...] tensor."""
    return tf.reduce_sum(tf.reshape(tf.abs(t), [tf.shape(t)[0], -1]), axis=1)


def per_example_norm(per_example: tf.Tensor, kind: str) -> tf.Tensor:
    """Squared L2 norm (kind "l2") or L1 norm (kind "l1") of each example's [B, ...] slice."""
    return sq_norm(per_example) if kind == "l2" else l1_norm(per_example)


def weighted_batch_sum(weights: tf.Tensor, per_example: tf.Tensor) -> tf.Tensor:
    """sum_b weights[b] * per_example[b] for a [B, ...] tensor."""
    return tf.tensordot(tf.cast(weights, per_example.dtype), per_example, 1)


def scale_examples(t: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """t[b] * weights[b] for a [B, ...] tensor (weights broadcast over the other axes)."""
    w = tf.cast(weights, t.dtype)
    return t * tf.reshape(w, tf.concat([tf.shape(w), tf.ones([tf.rank(t) - 1], tf.int32)], 0))


def sum_to_parameter(t: tf.Tensor, kept_axes: Sequence[int], shape: Sequence[int]) -> tf.Tensor:
    """[B, ...] -> [B, *shape]: sums `t` over every non-batch axis not in `kept_axes`.

    The kept axes stay in positional order, so the result's row-major layout is that of
    the parameter reshaped onto the input (the way Keras broadcasts gamma/beta/alpha).
    """
    reduce = [i for i in range(1, t.shape.rank) if i not in kept_axes]
    if reduce:
        t = tf.reduce_sum(t, axis=reduce)
    return tf.reshape(t, [-1, *shape])


def stacked_positions(pairs: Sequence[Tuple[tf.Tensor, tf.Tensor]]) -> Tuple[tf.Tensor, tf.Tensor]:
    """Pairs of [B, ..., d] tensors -> [B, T, d_a] and [B, T, d_g], all calls on one axis."""
    if len(pairs) == 1:
        a, g = pairs[0]
        return flatten_positions(a), flatten_positions(g)
    return (tf.concat([flatten_positions(a) for a, _ in pairs], axis=1),
            tf.concat([flatten_positions(g) for _, g in pairs], axis=1))


def outer_product_norms(pairs: Sequence[Tuple[tf.Tensor, tf.Tensor]], kind: str) -> tf.Tensor:
    """[B]: squared L2 or L1 norm of each example's sum over calls and positions of a_t g_t^T.

    This is the per-example gradient of a matrix M in z = a @ M (Dense's kernel; LoRA's
    factors). One rank-2 call: the outer product's norm is the product of a's and g's. Over
    positions: the ghost norm sum_{t,s} (a_t . a_s)(g_t . g_s) (L2 only) or the materialized
    [B, in, out] gradient, the cheaper by the static shapes: T^2 (in + out) against T in out.
    """
    if len(pairs) == 1 and pairs[0][0].shape.rank == 2:
        a, g = pairs[0]
        size = tf.square if kind == "l2" else tf.abs
        return tf.reduce_sum(size(a), 1) * tf.reduce_sum(size(g), 1)
    a, g = stacked_positions(pairs)
    positions, k_in, k_out = a.shape[1], a.shape[-1], g.shape[-1]
    ghost_is_cheaper = (None not in (positions, k_in, k_out)
                        and positions * (k_in + k_out) < k_in * k_out)
    if kind == "l2" and ghost_is_cheaper:
        aa = tf.einsum("bti,bsi->bts", a, a)
        gg = tf.einsum("bto,bso->bts", g, g)
        return tf.reduce_sum(aa * gg, axis=[1, 2])
    return per_example_norm(tf.einsum("bti,bto->bio", a, g), kind)


def outer_product_sum(pairs: Sequence[Tuple[tf.Tensor, tf.Tensor]],
                      weights: tf.Tensor) -> tf.Tensor:
    """[in, out]: sum_b weights[b] sum_{calls, t} a[b,t] g[b,t]^T."""
    if len(pairs) == 1 and pairs[0][0].shape.rank == 2:
        a, g = pairs[0]
        return tf.matmul(a, g * tf.cast(weights, g.dtype)[:, None], transpose_a=True)
    a, g = stacked_positions(pairs)
    return tf.einsum("bti,bto->io", a, g * tf.cast(weights, g.dtype)[:, None, None])


def position_sums(ts: Sequence[tf.Tensor]) -> tf.Tensor:
    """[B, c]: the sum over positions and over calls of [B, ..., c] tensors (a bias gradient)."""
    return tf.add_n([tf.reduce_sum(flatten_positions(t), axis=1) for t in ts])


def _call_owner(cls: type) -> Optional[type]:
    """The class in `cls`'s MRO that defines the `call` method `cls` uses."""
    return next((c for c in cls.__mro__ if "call" in vars(c)), None)


class LayerRule:
    """How one layer type is re-run, and how its per-example gradients are measured and summed.

    A rule is registered for layer classes (`tfdp.training.register_layer_rule` or the
    `layer_rule` decorator); `layer_types` then holds them. Subclasses of a registered
    class use the rule unless they override `call` (the rule re-implements that call, so
    a different one would be measured wrongly); a rule may widen or narrow `supports`.

    The methods, all called while tracing the train step:
      variant        the rule that handles one layer (see `rule_for`; self by default);
      forward        re-runs one call: (output, a, z), or None to run the layer as usual
                     (its variables then take a slower exact path);
      variables      the trainable variables whose gradients the rule produces;
      norms          per-example squared L2 or L1 norms over those variables, summed over
                     the layer's calls;
      weighted_sums  sum_b w_b * grad_b for each variable, keyed by `var_key`.
    """

    layer_types: Tuple[type, ...] = ()

    def supports(self, layer: keras.layers.Layer) -> bool:
        """True when this rule handles `layer` exactly."""
        cls = type(layer)
        return any(isinstance(layer, t) and _call_owner(cls) is _call_owner(t)
                   for t in self.layer_types)

    def variant(self, layer: keras.layers.Layer) -> "LayerRule":
        """The rule for this particular layer: this one, or the variant for a configuration
        of the layer class that computes a different function of its weights (Keras's LoRA)."""
        return self

    def forward(self, layer: keras.layers.Layer, inputs: Any, *args: Any,
                **kwargs: Any) -> Optional[Tuple[Any, Any, Any]]:
        """Returns (output, a, z): the layer's output, what the rule needs, and z.

        `z` is a tensor (or nest of tensors) that the output depends on through the
        layer's weights; the gradient g of the loss w.r.t. z reaches `norms` and
        `weighted_sums` in the same structure. `args`/`kwargs` are the call's other
        arguments (`training`, `mask`, ...). Returns None when this call cannot be
        handled exactly.
        """
        raise NotImplementedError

    def variables(self, layer: keras.layers.Layer) -> List[tf.Variable]:
        """The trainable variables whose gradients this rule produces."""
        return [v for v in (getattr(layer, "kernel", None), getattr(layer, "bias", None))
                if v is not None and v.trainable]

    def norms(self, layer: keras.layers.Layer, calls: Sequence[Call], kind: str) -> tf.Tensor:
        """[B]: per-example squared L2 norm (kind "l2") or L1 norm (kind "l1") over `variables`."""
        raise NotImplementedError

    def weighted_sums(self, layer: keras.layers.Layer, calls: Sequence[Call],
                      weights: tf.Tensor) -> Dict[int, tf.Tensor]:
        """{var_key(variable): sum_b weights[b] * per-example gradient[b]}."""
        raise NotImplementedError


class PerExampleGradientRule(LayerRule):
    """A rule defined by its per-example gradients: norms and sums follow from them.

    For layers whose per-example gradients are small (normalization scales, PReLU
    slopes, depthwise kernels) materializing them is the cheap exact form; subclasses
    implement `per_example_gradients` only.
    """

    def per_example_gradients(self, layer: keras.layers.Layer,
                              calls: Sequence[Call]) -> Dict[int, tf.Tensor]:
        """{var_key(variable): [B, *variable.shape]} summed over the layer's calls."""
        raise NotImplementedError

    def norms(self, layer, calls, kind):
        grads = self.per_example_gradients(layer, calls).values()
        return tf.add_n([per_example_norm(g, kind) for g in grads])

    def weighted_sums(self, layer, calls, weights):
        return {key: weighted_batch_sum(weights, g)
                for key, g in self.per_example_gradients(layer, calls).items()}
