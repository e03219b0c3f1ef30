"""`make_private(model)`: the same model, trained with fast per-example clipping in `fit`."""

from __future__ import annotations

import contextlib
from typing import Dict, List

import tensorflow as tf

from tfdp.optimizers.clipping import clip_norm_kind, finite_units, per_unit_norms, zero_units
from tfdp.optimizers.per_example_loss import per_unit_losses
from tfdp.training.layer_rules import LayerRule, rule_for

_NORMALIZATION_ADVICE = (
    "BatchNormalization mixes the examples of a batch, so one example's gradient depends on "
    "the others and per-example clipping no longer bounds its influence. Replace it with "
    "tf.keras.layers.GroupNormalization or tf.keras.layers.LayerNormalization."
)


def _layers(model: tf.keras.Model) -> List[tf.keras.layers.Layer]:
    return [m for m in model.submodules if isinstance(m, tf.keras.layers.Layer)]


def check_dp_compatible(model: tf.keras.Model) -> None:
    """Raises ValueError for layers that break per-example sensitivity."""
    for layer in _layers(model):
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            raise ValueError(f"Layer {layer.name!r}: {_NORMALIZATION_ADVICE}")
        if getattr(layer, "activity_regularizer", None) is not None:
            raise ValueError(
                f"Layer {layer.name!r} has an activity_regularizer, a loss that depends on the "
                "whole batch's data outside the per-example losses; remove it for DP training."
            )


@contextlib.contextmanager
def capturing_layer_calls(model: tf.keras.Model, records: Dict[int, list]):
    """While active, supported layers record (input, pre-activation output) of every call."""
    patched = []
    for layer in _layers(model):
        rule = rule_for(layer)
        if rule is None or not layer.trainable or not rule.variables(layer):
            continue
        original = layer.call

        def call(inputs, *args, _layer=layer, _rule=rule, _original=original, **kwargs):
            captured = _rule.forward(_layer, inputs)
            if captured is None:
                return _original(inputs, *args, **kwargs)
            output, a, z = captured
            records.setdefault(id(_layer), (_layer, _rule, []))[2].append((a, z))
            return output

        layer.call = call
        patched.append(layer)
    try:
        yield
    finally:
        for layer in patched:
            del layer.call


@tf.keras.utils.register_keras_serializable(package="tfdp")
class PrivateModel(tf.keras.Model):
    """A functional Keras model whose `train_step` clips per-example gradients fast.

    Built by `tfdp.make_private(model)`: it shares the original model's layers and
    weights. Compile it with a tfdp DP optimizer (e.g. `tfdp.DPKerasSGDOptimizer`)
    and a per-example loss (`reduction=NONE`); `fit` then computes every example's
    gradient norm from the layers' inputs and output gradients (Dense, Conv1D,
    Conv2D, Embedding, LayerNormalization), clips, sums, and hands the sum to the
    optimizer's DP query for noise, counters and the update. Layers it does not
    know take a vectorized per-example Jacobian. `evaluate`, `predict` and saving
    behave as for the original model.
    """

    def train_step(self, data):
        """One DP step: per-example losses, norms, clipped sum, noise via the optimizer."""
        x, y, sample_weight = tf.keras.utils.unpack_x_y_sample_weight(data)
        optimizer = self.optimizer
        if not hasattr(optimizer, "privatize_clipped_sum"):
            raise ValueError(
                "A model from tfdp.make_private must be compiled with a tfdp DP optimizer "
                f"(tfdp.DPKerasSGDOptimizer, ...), got {type(optimizer).__name__}."
            )
        if optimizer.num_microbatches is not None:
            raise ValueError(
                "The fast path clips each example; create the optimizer with "
                "num_microbatches=None (the default)."
            )
        query = optimizer.dp_sum_query
        kind = clip_norm_kind(query)
        if kind is None:
            raise ValueError(
                f"The fast path clips for Gaussian (L2) and Laplace (L1) sum queries; "
                f"{type(query).__name__} clips its own way: train the original model with the "
                "optimizer alone."
            )
        variables = self.trainable_variables
        records: Dict[int, tuple] = {}
        with tf.GradientTape(persistent=True) as tape:
            with capturing_layer_calls(self, records):
                y_pred = self(x, training=True)
            loss = self.compiled_loss(y, y_pred, sample_weight, regularization_losses=None)
            example_losses, _, batch_size = per_unit_losses(loss, None)
            # Each example's loss depends on its own z only, so d(sum)/dz[b] = dL_b/dz[b].
            total_loss = tf.reduce_sum(example_losses)
            regularization = self._data_independent_regularization()
        covered = {v.ref() for layer, rule, _ in records.values() for v in rule.variables(layer)}
        fallback = [v for v in variables if v.ref() not in covered]

        # Gradients of the per-example losses w.r.t. every captured pre-activation z.
        zs = [z for _, _, calls in records.values() for _, z in calls]
        z_grads = iter(tape.gradient(total_loss, zs,
                                     unconnected_gradients=tf.UnconnectedGradients.ZERO))
        layer_calls = [
            (layer, rule, [(a, next(z_grads)) for a, _ in calls])
            for layer, rule, calls in records.values()
        ]
        fallback_grads = []
        if fallback:
            fallback_grads = tape.jacobian(
                example_losses, fallback, unconnected_gradients=tf.UnconnectedGradients.ZERO
            )

        norms = self._per_example_norms(layer_calls, fallback_grads, kind)
        finite = finite_units([norms], example_losses)
        nonfinite = tf.reduce_sum(tf.cast(tf.logical_not(finite), tf.int64))
        if optimizer.on_nonfinite == "skip":
            # A skipped example contributes exactly zero (inside the clip ball: DP is kept).
            norms = tf.where(finite, norms, tf.zeros_like(norms))
            layer_calls = [
                (layer, rule, [(zero_units(a, finite), zero_units(g, finite)) for a, g in calls])
                for layer, rule, calls in layer_calls
            ]
            fallback_grads = [zero_units(j, finite) for j in fallback_grads]
        clip = tf.cast(query.derive_sample_params(optimizer.query_global_state()), norms.dtype)
        # clip / max(norm, clip): the factor of the query's own preprocess_record.
        weights = clip / tf.maximum(norms, clip)

        sums = {}
        for layer, rule, calls in layer_calls:
            sums.update(rule.weighted_sums(layer, calls, weights))
        for variable, per_example in zip(fallback, fallback_grads):
            sums[variable.ref()] = tf.tensordot(tf.cast(weights, per_example.dtype), per_example, 1)
        clipped_sum = [sums[v.ref()] for v in variables]

        gradients = optimizer.privatize_clipped_sum(clipped_sum, batch_size, batch_size, nonfinite)
        if regularization is not None:
            # Weight regularizers do not read the data: adding their gradient after the noise
            # is post-processing and costs no privacy.
            reg_grads = tape.gradient(regularization, variables,
                                      unconnected_gradients=tf.UnconnectedGradients.ZERO)
            gradients = [g + r for g, r in zip(gradients, reg_grads)]
        del tape
        optimizer.apply_gradients(zip(gradients, variables))
        self.compiled_metrics.update_state(y, y_pred, sample_weight)
        return self.get_metrics_result()

    def _data_independent_regularization(self):
        """Sum of the weight regularizers; refuses data-dependent `add_loss` losses."""
        losses = self.losses
        if not losses:
            return None
        weight_penalties = sum(len(getattr(layer, "_callable_losses", [])) for layer in _layers(self))
        weight_penalties += len(getattr(self, "_callable_losses", []))
        if len(losses) > weight_penalties:
            raise ValueError(
                "The model adds losses computed from the data (add_loss or activity "
                "regularizers); the fast path cannot clip them per example. Remove them, or "
                "train the original model with the DP optimizer alone."
            )
        return tf.add_n(losses)

    @staticmethod
    def _per_example_norms(layer_calls, fallback_grads, kind):
        parts = [rule.norms(layer, calls, kind) for layer, rule, calls in layer_calls]
        if fallback_grads:
            norms = per_unit_norms(list(fallback_grads), kind)
            parts.append(tf.square(norms) if kind == "l2" else norms)
        total = tf.add_n(parts)
        return tf.sqrt(total) if kind == "l2" else total


def make_private(model: tf.keras.Model) -> PrivateModel:
    """Returns a model with the same layers and weights whose `fit` clips per example fast.

    Compile the result with a tfdp DP optimizer and a loss built with
    `reduction=tf.keras.losses.Reduction.NONE`. The model must be built (a
    Sequential given its input shape, or a functional model); BatchNormalization
    and activity regularizers are refused because they break per-example
    sensitivity.
    """
    if isinstance(model, PrivateModel):
        return model
    if not isinstance(model, tf.keras.Model):
        raise ValueError(f"make_private needs a tf.keras.Model, got {type(model).__name__}.")
    check_dp_compatible(model)
    try:
        inputs, outputs = model.inputs, model.outputs
    except AttributeError:
        inputs, outputs = None, None
    if not inputs:
        raise ValueError(
            "make_private needs a built functional or Sequential model with known inputs: give "
            "the first layer an input_shape (or start with tf.keras.Input), or call "
            "model.build(input_shape) first."
        )
    return PrivateModel(inputs=inputs, outputs=outputs, name=f"{model.name}_private")
