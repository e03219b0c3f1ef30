"""The local fallback: per-example gradients of one layer's variables by a vectorized VJP of that layer.

For a layer without a rule, the gradient of example b's loss w.r.t. the layer's
variables depends only on the layer's own inputs for b and on g[b], the gradient of
the loss w.r.t. the layer's output for b (when the layer treats examples
independently). So the layer is re-run on each example alone under
`tf.vectorized_map`, and the vector-Jacobian product with g[b] gives that example's
gradient: a small multiple of the layer's own backward pass, not the whole model's
Jacobian. The re-run's outputs are checked against the batched call's, so a layer
that draws random numbers or mixes examples stops the step with advice instead of
training on a wrong gradient.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import tensorflow as tf

from tfdp.training.rules import var_key


def batch_major_leaves(leaves: Sequence[Any], batch_size: Optional[int] = None) -> Tuple[int, ...]:
    """Indices of the tensor leaves whose leading axis is the batch.

    That is a dynamic leading axis, or one of the step's static batch size. (Keras's
    convention: every per-example argument of a call, masks included, is batch-major.)
    """
    return tuple(i for i, t in enumerate(leaves)
                 if isinstance(t, tf.Tensor) and t.shape.rank
                 and t.shape[0] in (None, batch_size))


# Each example is re-run as a batch of two copies, the second with a zero output gradient
# (so it adds exactly nothing): with a batch of one, vectorizing a [1, M, K] x [K, N] matmul
# gives a [B, 1, M, K] x [K, N] one, which TensorFlow 2.21's oneDNN kernels compute wrongly
# (garbage or heap corruption; tests/training/test_gradient_plan.py has the case).

# Recomputed outputs must match the batched call to this relative precision (float32
# round-off across different kernel orders is far smaller; a random mask is not).
_REPRODUCTION_RTOL = 1e-3


class LocalCall:
    """One call of a layer on the local fallback: its arguments, and its output (z)."""

    def __init__(self, inputs: Any, args: Tuple, kwargs: Dict, output: Any,
                 batch_size: Optional[int] = None):
        self.structure = (inputs, args, kwargs)
        self.leaves = tf.nest.flatten(self.structure)
        self.sliced = batch_major_leaves(self.leaves, batch_size)
        self.output = output

    def float_outputs(self) -> List[tf.Tensor]:
        """The output's floating tensors (what the loss can be differentiated to)."""
        return [t for t in tf.nest.flatten(self.output)
                if isinstance(t, tf.Tensor) and t.dtype.is_floating]

    def rebuild(self, sliced: Sequence[tf.Tensor]) -> Tuple[Any, Tuple, Dict]:
        """(inputs, args, kwargs) with each batch-major leaf replaced by a batch of two
        copies of one example (see the note above)."""
        leaves = list(self.leaves)
        for index, value in zip(self.sliced, sliced):
            leaves[index] = tf.stack([value, value])
        return tf.nest.pack_sequence_as(self.structure, leaves)


def per_example_gradients(layer, original_call: Callable, calls: Sequence[Tuple[LocalCall, List]],
                          variables: Sequence[Any], paused) -> Dict[int, tf.Tensor]:
    """{var_key(v): [B, *v.shape]}: the layer's per-example gradients, summed over its calls.

    `calls` pairs each `LocalCall` with the gradients of the losses' sum w.r.t. its
    float outputs; `paused` is a context manager under which the layers that capture
    for rules leave no record (the re-run is not part of the step's forward pass).
    """
    handles = [v.value if hasattr(v, "value") else v for v in variables]
    totals: Dict[int, tf.Tensor] = {}
    for call, output_grads in calls:
        outputs = call.float_outputs()

        def one(example, _call=call, _count=len(outputs)):
            sliced, grads = example[0], example[1]
            inputs, args, kwargs = _call.rebuild(sliced)
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(handles)
                output = original_call(inputs, *args, **kwargs)
            recomputed = [t for t in tf.nest.flatten(output)
                          if isinstance(t, tf.Tensor) and t.dtype.is_floating]
            if len(recomputed) != _count:
                raise ValueError(f"Layer {layer.name!r} returned a different output structure "
                                 "when called on one example.")
            per_var = tape.gradient(recomputed, handles,
                                    output_gradients=[tf.stack([g, tf.zeros_like(g)])
                                                      for g in grads],
                                    unconnected_gradients=tf.UnconnectedGradients.ZERO)
            return per_var, [t[0] for t in recomputed]

        sliced = [call.leaves[i] for i in call.sliced]
        with paused():
            per_var, recomputed = tf.vectorized_map(one, (sliced, list(output_grads)))
        checks = [_reproduced(layer, want, got) for want, got in zip(outputs, recomputed)]
        with tf.control_dependencies(checks):
            per_var = [tf.identity(g) for g in per_var]
        for variable, grad in zip(variables, per_var):
            key = var_key(variable)
            totals[key] = grad if key not in totals else totals[key] + grad
    return totals


def _reproduced(layer, batched: tf.Tensor, per_example: tf.Tensor) -> tf.Operation:
    """An assertion that the per-example re-run gave the batched call's output.

    A NaN/inf example (skipped by on_nonfinite="skip") gives non-finite entries in both
    runs: those must sit at the same places (a layer that mixes examples spreads them over
    the batched rows only), and the finite entries are compared.
    """
    batched = tf.cast(batched, tf.float32)
    per_example = tf.cast(per_example, tf.float32)
    finite = tf.math.is_finite(batched)
    same_places = tf.reduce_all(tf.equal(finite, tf.math.is_finite(per_example)))
    difference = tf.where(finite, tf.abs(batched - per_example), tf.zeros_like(batched))
    # Non-finite places that differ count as an infinite error.
    error = tf.where(same_places, tf.reduce_max(difference), float("inf"))
    scale = tf.reduce_max(tf.where(finite, tf.abs(batched), tf.zeros_like(batched))) + 1e-6
    return tf.debugging.assert_less_equal(
        error, _REPRODUCTION_RTOL * scale,
        message=(f"tfdp's local per-example fallback could not reproduce layer {layer.name!r} "
                 "one example at a time: it draws random numbers in its call or mixes the "
                 "examples of a batch. Register an exact rule for it with "
                 "tfdp.training.register_layer_rule, or move the randomness into a separate "
                 "layer (e.g. keras.layers.Dropout) after it."))
