"""`make_private(model)`: the same model, trained with fast per-example clipping in `fit`.

In Keras 3 an optimizer only ever sees the batch-averaged gradient, so DP-SGD's
per-example work (per-example losses, gradient norms, clipping, the clipped sum)
lives in the model's `train_step`. `PrivateModel` provides it; the DP optimizer
then turns the clipped sum into a noised update through its `DPQuery` and keeps
the ledger.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import keras
import tensorflow as tf
from keras.src.models.functional import Functional

from tfdp.optimizers.clipping import clip_norm_kind
from tfdp.optimizers.per_example_loss import per_unit_losses
from tfdp.training.per_example import capture, clipped_sum, static_batch_size
from tfdp.training.plan import GradientPlan, make_plan, model_layers

_NORMALIZATION_ADVICE = (
    "BatchNormalization mixes the examples of a batch, so one example's gradient depends on "
    "the others and per-example clipping no longer bounds its influence. Replace it with "
    "keras.layers.GroupNormalization or keras.layers.LayerNormalization."
)
_OTHER_KERAS_ADVICE = (
    "make_private needs a Keras 3 model (`import keras`; on TensorFlow >= 2.16 `keras` is "
    "the same), got {kind}. A model built with tf-keras (Keras 2, TF_USE_LEGACY_KERAS=1) "
    "cannot be trained by tfdp: build it with `keras.layers` / `keras.Sequential` / "
    "`keras.Model` instead."
)


def check_dp_compatible(model: keras.Model) -> None:
    """Raises ValueError for layers that break per-example sensitivity."""
    for layer in model_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            raise ValueError(f"Layer {layer.name!r}: {_NORMALIZATION_ADVICE}")
        if getattr(layer, "activity_regularizer", None) is not None:
            raise ValueError(
                f"Layer {layer.name!r} has an activity_regularizer, a loss that depends on the "
                "whole batch's data outside the per-example losses; remove it for DP training."
            )


class PrivateTrainStep:
    """The DP `train_step` shared by both kinds of private model (a mixin of keras.Model).

    Each step: per-example losses, every example's gradient norm along the model's
    `GradientPlan` (a layer rule from the captured inputs and output gradients, else
    the layer's own vectorized per-example VJP, else the model's per-example
    Jacobian), clipping weights clip / max(norm, clip), the weighted
    (clipped) sum of gradients, and the optimizer's `privatize_clipped_sum` for the
    noise, the ledger and the update. With `num_microbatches` (or a query that
    clips its own way) the whole model takes the Jacobian path.
    """

    # ----- per-example losses -----

    def per_example_loss(self, y, y_pred, sample_weight=None) -> tf.Tensor:
        """The compiled loss, one value per example ([batch]), sample weights applied."""
        loss = self.loss
        if loss is None:
            raise ValueError("Compile the private model with a loss (reduction=None).")
        if isinstance(loss, (list, tuple, dict)):
            raise ValueError(
                "tfdp's private train step takes one loss for the model's output; combine "
                "several outputs' losses in one loss function with reduction=None."
            )
        if isinstance(loss, str):
            loss = keras.losses.get(loss)
        if isinstance(loss, keras.losses.Loss):
            values = loss(y, y_pred, sample_weight=sample_weight)
        else:
            values = loss(y, y_pred)
            if sample_weight is not None:
                values = values * tf.cast(sample_weight, values.dtype)
        return values

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The batch mean of the per-example losses plus weight penalties (what Keras logs)."""
        values = tf.convert_to_tensor(self.per_example_loss(y, y_pred, sample_weight))
        if values.shape.rank == 0:
            total = values
        else:
            total = tf.reduce_mean(values)
        regularization = self._weight_penalty()
        return total if regularization is None else total + tf.cast(regularization, total.dtype)

    def _weight_penalty(self):
        """Sum of the weight regularizers; refuses data-dependent `add_loss` losses."""
        losses = self.losses
        if not losses:
            return None
        penalties = [v.regularizer(v) for v in self.trainable_variables
                     if getattr(v, "regularizer", None) is not None]
        if len(losses) > len(penalties):
            raise ValueError(
                "The model adds losses computed from the data (add_loss or activity "
                "regularizers); per-example clipping cannot bound them. Remove them for DP "
                "training."
            )
        return tf.add_n([tf.cast(p, tf.float32) for p in penalties]) if penalties else None

    # ----- the step -----

    def _dp_optimizer(self):
        optimizer = self.optimizer
        if not hasattr(optimizer, "privatize_clipped_sum"):
            raise ValueError(
                "A model from tfdp.make_private must be compiled with a tfdp DP optimizer "
                f"(tfdp.DPKerasSGDOptimizer, ...), got {type(optimizer).__name__}."
            )
        return optimizer

    def train_step(self, data):
        """One DP step: per-example losses, norms, clipped sum, noise via the optimizer."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        optimizer = self._dp_optimizer()
        kind = clip_norm_kind(optimizer.dp_sum_query)
        variables = list(self.trainable_variables)
        fast = optimizer.num_microbatches is None and kind is not None
        plan = self._gradient_plan(x) if fast else None
        with tf.GradientTape(persistent=True) as tape:
            if fast:
                with capture(plan, static_batch_size(x)) as captured:
                    y_pred = self(x, training=True)
            else:
                tape.watch([v.value for v in variables])
                y_pred = self(x, training=True)
            values = self.per_example_loss(y, y_pred, sample_weight)
            example_losses, _, batch_size = per_unit_losses(values, None)
            regularization = self._weight_penalty()
        if fast:
            gradients = self._fast_private_gradients(
                optimizer, kind, tape, captured, plan, variables, example_losses, batch_size)
        else:
            with tape:
                unit_losses, num_units, batch_size = per_unit_losses(
                    values, optimizer.num_microbatches)
            jacobians = tape.jacobian(unit_losses, [v.value for v in variables],
                                      unconnected_gradients=tf.UnconnectedGradients.ZERO)
            gradients = optimizer.privatize_per_unit_gradients(
                jacobians, unit_losses, num_units, batch_size)
        if regularization is not None:
            # Weight regularizers do not read the data: adding their gradient after the noise
            # is post-processing and costs no privacy.
            reg_grads = tape.gradient(regularization, [v.value for v in variables],
                                      unconnected_gradients=tf.UnconnectedGradients.ZERO)
            gradients = [g + tf.cast(r, g.dtype) for g, r in zip(gradients, reg_grads)]
        del tape
        optimizer.apply(gradients, variables)
        mean_loss = tf.reduce_mean(example_losses)
        if regularization is not None:
            mean_loss = mean_loss + tf.cast(regularization, mean_loss.dtype)
        self._loss_tracker.update_state(mean_loss, sample_weight=batch_size)
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def _gradient_plan(self, x) -> GradientPlan:
        """The plan for this input signature (made once, when the step is first traced)."""
        key = str(tf.nest.map_structure(lambda t: (tuple(t.shape[1:]), t.dtype.name), x))
        plans = self.__dict__.setdefault("_tfdp_plans", {})
        if key not in plans:
            plans[key] = make_plan(self, x)
        return plans[key]

    def _fast_private_gradients(self, optimizer, kind, tape, captured, plan, variables,
                                example_losses, batch_size):
        query = optimizer.dp_sum_query
        clip = query.derive_sample_params(optimizer.query_global_state())
        _, clipped, nonfinite = clipped_sum(
            tape, captured, plan, variables, example_losses, kind, clip,
            skip_nonfinite=optimizer.on_nonfinite == "skip")
        return optimizer.privatize_clipped_sum(clipped, batch_size, batch_size, nonfinite)


@keras.saving.register_keras_serializable(package="tfdp")
class PrivateModel(PrivateTrainStep, keras.Model):
    """A functional Keras model whose `train_step` clips per-example gradients fast.

    Built by `tfdp.make_private(model)` from a Sequential or functional model: it
    shares the original model's layers and weights. Compile it with a tfdp DP
    optimizer (e.g. `tfdp.DPKerasSGDOptimizer`) and a per-example loss
    (`reduction=None`); `fit` then computes every example's gradient norm from the
    layers' inputs and output gradients (the rules of `tfdp.training.rules`; a layer
    without one takes its own per-example VJP), clips, sums, and hands the sum to the
    optimizer's DP query for noise, counters and the update. `evaluate`, `predict` and saving behave as for the
    original model.
    """


@keras.saving.register_keras_serializable(package="tfdp")
class PrivateWrapper(PrivateTrainStep, keras.Model):
    """The private train step around a subclassed Keras model (which has no functional graph).

    Calls the wrapped model, so its layers and weights are the same objects. Saved
    with `.keras` like any model; the wrapped class must be serializable (registered
    with `keras.saving.register_keras_serializable`, with `get_config` when its
    constructor takes arguments).
    """

    def __init__(self, model: keras.Model, **kwargs: Any):
        super().__init__(**kwargs)
        self.wrapped = model

    def call(self, inputs, training: Optional[bool] = None):
        """The wrapped model's forward pass."""
        return self.wrapped(inputs, training=training)

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config["model"] = keras.saving.serialize_keras_object(self.wrapped)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        model = keras.saving.deserialize_keras_object(config.pop("model"),
                                                      custom_objects=custom_objects)
        return cls(model, **config)


def make_private(model: keras.Model) -> keras.Model:
    """Returns a model with the same layers and weights whose `fit` clips per example fast.

    Compile the result with a tfdp DP optimizer and a loss built with
    `reduction=None`. Sequential and functional models become a `PrivateModel`
    on the same graph; a subclassed model is wrapped (`PrivateWrapper`).
    BatchNormalization and activity regularizers are refused because they break
    per-example sensitivity; a tf-keras (Keras 2) model is refused with advice.
    """
    if isinstance(model, PrivateTrainStep):
        return model
    if not isinstance(model, keras.Model):
        kind = type(model).__module__ + "." + type(model).__name__
        if "tf_keras" in kind or "keras.src" not in kind and hasattr(model, "fit"):
            raise ValueError(_OTHER_KERAS_ADVICE.format(kind=kind))
        raise ValueError(f"make_private needs a keras.Model, got {type(model).__name__}.")
    check_dp_compatible(model)
    if isinstance(model, keras.Sequential):
        try:
            inputs, outputs = model.inputs[0], model.outputs[0]
        except (AttributeError, ValueError, IndexError, TypeError):
            raise ValueError(
                "make_private needs a built Sequential model with known inputs: start it with "
                "keras.Input(shape=...) (or give its first layer input_shape=...), or call "
                "model.build(input_shape) first."
            ) from None
    elif isinstance(model, Functional):
        inputs = model._inputs_struct  # pylint: disable=protected-access
        outputs = model._outputs_struct  # pylint: disable=protected-access
    else:
        if not model.built or not model.weights:
            raise ValueError(
                "make_private needs a built model: call the subclassed model once on a batch "
                "(model(x[:1])) or model.build(input_shape) before wrapping it, so that its "
                "layers and weights exist."
            )
        # Keras scope names may not start with "_" (a class named _Net gives "_net").
        return PrivateWrapper(model, name=f"{model.name.lstrip('_') or 'model'}_private")
    return PrivateModel(inputs=inputs, outputs=outputs, name=f"{model.name}_private")
