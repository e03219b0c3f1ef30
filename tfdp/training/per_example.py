"""Per-example gradient norms and the clipped gradient sum of one batch, along a `GradientPlan`.

`capture` wraps the planned layers' calls during the step's forward pass; after it,
`clipped_sum` takes the per-example losses' tape and returns each example's norm and
sum_b w_b * grad_b with w_b = clip / max(norm_b, clip), the factor of the DP query's
own `preprocess_record`. `gradient_plan` and `clipped_gradient_sum` expose the same
computation for inspection, tests and benchmarks.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Dict, List, Optional

import keras
import numpy as np
import tensorflow as tf

from tfdp.optimizers.clipping import (SKIP_NEEDS_ISOLATION, finite_units, per_unit_norms,
                                     zero_units)
from tfdp.training import local_gradients
from tfdp.training.plan import GradientPlan, _patched, make_plan
from tfdp.training.rules import var_key


class Captured:
    """The calls of one forward pass: rule layers' (a, z) and local layers' arguments and outputs."""

    def __init__(self) -> None:
        self.rule_calls: Dict[int, tuple] = {}
        self.local_calls: Dict[int, tuple] = {}
        self._paused = False

    @contextlib.contextmanager
    def paused(self):
        """While active, wrapped calls run without recording (the local fallback's re-runs)."""
        previous, self._paused = self._paused, True
        try:
            yield
        finally:
            self._paused = previous

    def zs(self) -> List[tf.Tensor]:
        """Every tensor the loss is differentiated to, in a fixed order."""
        out = []
        for _, _, calls in self.rule_calls.values():
            for _, z in calls:
                out.extend(tf.nest.flatten(z))
        for _, _, calls in self.local_calls.values():
            for call in calls:
                out.extend(call.float_outputs())
        return out


@contextlib.contextmanager
def capture(plan: GradientPlan, batch_size: Optional[int] = None):
    """Wraps the plan's rule and local layers so the forward pass records what they need.

    `batch_size` is the step's static batch size when it has one (else None).
    """
    captured = Captured()
    local_vars = {id(layer): variables for layer, variables in plan.local}

    def make_call(layer, original):
        rule = next((r for l, r in plan.rules if l is layer), None)
        if rule is not None:
            def call(inputs, *args, **kwargs):
                if captured._paused:  # pylint: disable=protected-access
                    return original(inputs, *args, **kwargs)
                result = rule.forward(layer, inputs, *args, **kwargs)
                if result is None:
                    raise RuntimeError(f"The rule for layer {layer.name!r} declined a call it "
                                       "accepted when the step was planned.")
                output, a, z = result
                captured.rule_calls.setdefault(id(layer), (layer, rule, []))[2].append((a, z))
                return output
        else:
            def call(inputs, *args, **kwargs):
                output = original(inputs, *args, **kwargs)
                if not captured._paused:  # pylint: disable=protected-access
                    entry = captured.local_calls.setdefault(
                        id(layer), (layer, (original, local_vars[id(layer)]), []))
                    entry[2].append(local_gradients.LocalCall(inputs, args, kwargs, output, batch_size))
                return output
        return call

    layers = [layer for layer, _ in plan.rules] + [layer for layer, _ in plan.local]
    with _patched(layers, make_call):
        yield captured


def _zero_nest(nest, keep):
    return tf.nest.map_structure(
        lambda t: zero_units(t, keep) if isinstance(t, tf.Tensor) else t, nest)


def _unit_slices(t: Any, unit: int, k: int) -> Any:
    """Row k of every unit in a unit-major [U * unit, ...] tensor (other values pass)."""
    if isinstance(t, tf.Tensor) and t.shape.rank:
        return t[k::unit]
    return t


def fold_units(calls: List[tuple], unit_size: int) -> List[tuple]:
    """A layer's calls over [U * unit_size] rows as unit_size calls over the U units.

    Row u * unit_size + k is the k-th row of unit u. A rule sums a layer's calls into
    each example's gradient (shared weights), so presenting row k of every unit as the
    k-th call makes every rule measure and sum per unit, exactly.
    """
    if unit_size == 1:
        return list(calls)
    return [tf.nest.map_structure(lambda t, _k=k: _unit_slices(t, unit_size, _k), call)
            for call in calls for k in range(unit_size)]


def unit_means(row_losses: tf.Tensor, unit_size: int) -> tf.Tensor:
    """[U * unit_size] row losses -> [U]: each unit's mean (its loss; the rows for K = 1)."""
    if unit_size == 1:
        return row_losses
    return tf.reduce_mean(tf.reshape(row_losses, [-1, unit_size]), axis=1)


def _sum_units(per_row: tf.Tensor, unit_size: int) -> tf.Tensor:
    """[U * unit_size, ...] -> [U, ...]: each unit's rows summed."""
    if unit_size == 1:
        return per_row
    return tf.reduce_sum(tf.reshape(per_row, [-1, unit_size, *per_row.shape[1:]]), axis=1)


def clipped_sum(tape: tf.GradientTape, captured: Captured, plan: GradientPlan,
                variables: List[Any], example_losses: tf.Tensor, kind: str, clip: tf.Tensor,
                skip_nonfinite: bool = False, unit_size: int = 1):
    """(norms [U], clipped sum in `variables` order, number of non-finite units).

    `tape` recorded the forward pass under `capture(plan)` and the per-example losses;
    kind is "l2" or "l1". With `unit_size` = K > 1 the rows come in consecutive runs of
    K (e.g. K augmentations of one example) and each run is one unit: its gradient is
    the mean of its rows' gradients, and that mean is what is clipped. With
    `skip_nonfinite` a unit whose loss or gradient is not finite contributes exactly
    zero (inside the clip ball, so DP is kept); that needs every variable on a rule or a
    local VJP, which isolate examples: with variables on the whole-model Jacobian (e.g.
    a tied embedding) it raises ValueError, as one non-finite example spreads to every
    row of the batched Jacobian.
    """
    if skip_nonfinite and plan.jacobian:
        _refuse_skip_with_jacobian(plan)
    with tape:  # a persistent tape: the sums are recorded too
        example_losses = unit_means(example_losses, unit_size)
        total_loss = tf.reduce_sum(example_losses)
    zs = captured.zs()
    grads = iter(tape.gradient(total_loss, zs, unconnected_gradients=tf.UnconnectedGradients.ZERO))
    rule_calls = []
    for layer, rule, calls in captured.rule_calls.values():
        with_grads = []
        for a, z in calls:
            flat = [next(grads) for _ in tf.nest.flatten(z)]
            with_grads.append((a, tf.nest.pack_sequence_as(z, flat)))
        rule_calls.append((layer, rule, fold_units(with_grads, unit_size)))
    local_calls = [(layer, fn, [(call, [next(grads) for _ in call.float_outputs()])
                                for call in calls])
                   for layer, fn, calls in captured.local_calls.values()]

    # Per-example gradients materialized by the local fallback and the Jacobian.
    materialized: Dict[int, tf.Tensor] = {}
    for layer, (original, local_vars), calls in local_calls:
        per_row = local_gradients.per_example_gradients(
            layer, original, calls, local_vars, captured.paused)
        materialized.update({k: _sum_units(g, unit_size) for k, g in per_row.items()})
    if plan.jacobian:
        jacobians = tape.jacobian(example_losses, [v.value for v in plan.jacobian],
                                  unconnected_gradients=tf.UnconnectedGradients.ZERO)
        materialized.update({var_key(v): j for v, j in zip(plan.jacobian, jacobians)})

    parts = [rule.norms(layer, calls, kind) for layer, rule, calls in rule_calls]
    if materialized:
        norms = per_unit_norms(list(materialized.values()), kind)
        parts.append(tf.square(norms) if kind == "l2" else norms)
    if parts:
        total = tf.add_n([tf.cast(p, tf.float32) for p in parts])
    else:
        total = tf.zeros_like(tf.cast(example_losses, tf.float32))
    norms = tf.sqrt(total) if kind == "l2" else total

    finite = finite_units([norms], example_losses)
    nonfinite = tf.reduce_sum(tf.cast(tf.logical_not(finite), tf.int64))
    if skip_nonfinite:
        norms = tf.where(finite, norms, tf.zeros_like(norms))
        rule_calls = [(layer, rule, [(_zero_nest(a, finite), _zero_nest(g, finite))
                                     for a, g in calls])
                      for layer, rule, calls in rule_calls]
        materialized = {k: zero_units(t, finite) for k, t in materialized.items()}
    clip = tf.cast(clip, norms.dtype)
    weights = clip / tf.maximum(norms, clip)

    sums: Dict[int, tf.Tensor] = {}
    for layer, rule, calls in rule_calls:
        sums.update(rule.weighted_sums(layer, calls, weights))
    for key, per_example in materialized.items():
        sums[key] = tf.tensordot(tf.cast(weights, per_example.dtype), per_example, 1)
    clipped = [sums[var_key(v)] if var_key(v) in sums else tf.zeros(v.shape, v.dtype)
               for v in variables]
    return norms, clipped, nonfinite


def _refuse_skip_with_jacobian(plan: GradientPlan) -> None:
    """on_nonfinite="skip" needs isolated examples; the plan's Jacobian variables are not."""
    owners = sorted({name for name, path in plan.describe().items() if path == "jacobian"})
    where = ("make_private's fast path for this model: the plan sends the variables of "
             f"{owners} to the whole-model Jacobian (a variable read by two layers, such as "
             "an embedding tied to the output projection)")
    raise ValueError(SKIP_NEEDS_ISOLATION.format(where=where))


def static_batch_size(x: Any) -> Optional[int]:
    """The leading dimension of the first input tensor when it is static, else None."""
    first = tf.nest.flatten(x)[0]
    shape = getattr(first, "shape", None)
    return None if shape is None or not len(shape) else shape[0]


def gradient_plan(model: keras.Model, x: Any) -> Dict[str, str]:
    """{layer name: "rule:<RuleClass>" | "local" | "jacobian"}: how `make_private` computes
    each layer's per-example gradients for inputs shaped like `x` (one batch)."""
    return make_plan(model, x).describe()


@dataclasses.dataclass
class ClippedGradientSum:
    """One batch's per-example gradient norms, clipped sum and the plan that computed them."""

    norms: np.ndarray
    clipped_sum: List[np.ndarray]
    plan: Dict[str, str]


def clipped_gradient_sum(model: keras.Model, loss, x: Any, y: Any, *, clip: float,
                         kind: str = "l2", sample_weight: Optional[Any] = None,
                         unit_size: int = 1) -> ClippedGradientSum:
    """Each example's gradient norm and sum_b min(1, clip/norm_b) grad_b, by the fast path.

    `loss` is a per-example Keras loss (reduction=None). The clipped sum is in
    `model.trainable_variables` order. This is what one `make_private` step hands to
    the DP optimizer before noise, for checking a rule or a model. With `unit_size` K
    every K consecutive rows of `x` are one unit whose gradient is the mean of its
    rows' (augmentation multiplicity): the norms are then one per unit.
    """
    if kind not in ("l2", "l1"):
        raise ValueError(f"kind must be 'l2' or 'l1', got {kind!r}.")
    if unit_size < 1 or len(tf.nest.flatten(y)[0]) % unit_size:
        raise ValueError(f"unit_size={unit_size} must be positive and divide the batch "
                         f"({len(tf.nest.flatten(y)[0])} rows).")
    plan = make_plan(model, x)
    variables = list(model.trainable_variables)

    @tf.function(autograph=False)
    def step(x, y, sample_weight):
        with tf.GradientTape(persistent=True) as tape:
            with capture(plan, static_batch_size(x)) as captured:
                y_pred = model(x, training=True)
            values = loss(y, y_pred, sample_weight=sample_weight)
            if values.shape.rank > 1:
                values = tf.reduce_mean(values, axis=list(range(1, values.shape.rank)))
        norms, clipped, _ = clipped_sum(tape, captured, plan, variables, values, kind, clip,
                                        unit_size=unit_size)
        return norms, clipped

    norms, clipped = step(x, y, None if sample_weight is None
                          else tf.convert_to_tensor(sample_weight, tf.float32))
    return ClippedGradientSum(norms=np.asarray(norms),
                              clipped_sum=[np.asarray(c) for c in clipped],
                              plan=plan.describe())
