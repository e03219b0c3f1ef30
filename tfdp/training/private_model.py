"""`make_private(model)`: the same model, trained with fast per-example clipping in `fit`.

In Keras 3 an optimizer only ever sees the batch-averaged gradient, so DP-SGD's
per-example work (per-example losses, gradient norms, clipping, the clipped sum)
lives in the model's `train_step`. `PrivateModel` provides it; the DP optimizer
then turns the clipped sum into a noised update through its `DPQuery` and keeps
the ledger.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, Optional

import keras
import tensorflow as tf
from keras.src.models.functional import Functional

from tfdp.optimizers.clipping import clip_norm_kind
from tfdp.optimizers.per_example_loss import per_unit_losses
from tfdp.training.groups import GROUPED_LAYOUT, flatten_groups, group_slots, looks_grouped
from tfdp.training.model_check import check_dp_compatible, check_first_step, share_checks
from tfdp.training.per_example import capture, clipped_sum, static_batch_size, unit_means
from tfdp.training.plan import GradientPlan, make_plan
from tfdp.training.step_options import StepOptions

_FIT_SIGNATURE = inspect.signature(keras.Model.fit)
_OTHER_KERAS_ADVICE = (
    "make_private needs a Keras 3 model (`import keras`; on TensorFlow >= 2.16 `keras` is "
    "the same), got {kind}. A model built with tf-keras (Keras 2, TF_USE_LEGACY_KERAS=1) "
    "cannot be trained by tfdp: build it with `keras.layers` / `keras.Sequential` / "
    "`keras.Model` instead."
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

    # Set by `make_private` (`set_step_options`); the class default does nothing extra.
    use_fast_path = True
    step_options = StepOptions()

    @property
    def augmentation_multiplicity(self) -> int:
        """K: each example's gradient is the mean over K augmented copies, clipped once."""
        return self.step_options.augmentation_multiplicity

    @property
    def physical_batch_size(self) -> Optional[int]:
        """At most this many examples go through the model at once (None: the whole batch)."""
        return self.step_options.physical_batch_size

    def set_step_options(self, **options: Any) -> None:
        """Sets the `StepOptions` (augment, augmentation_multiplicity, physical_batch_size,
        grouped, training_metrics).

        See `make_private` for their meaning; invalid combinations raise ValueError.
        """
        self.step_options = StepOptions(**options)

    def fit(self, *args: Any, **kwargs: Any):
        """Keras `fit`, after checking that the data, the DP optimizer and any
        `PrivacyCallback` state the same privacy facts (`tfdp.plan.check_fit`)."""
        from tfdp.plan.fit_check import check_fit  # pylint: disable=import-outside-toplevel

        bound = _FIT_SIGNATURE.bind(self, *args, **kwargs).arguments
        check_fit(self, bound.get("x"), bound.get("batch_size"), bound.get("callbacks"))
        return super().fit(*args, **kwargs)

    def train_step(self, data):
        """One DP step: per-example losses, norms, clipped sum, noise via the optimizer.

        With a physical batch size the batch is taken in chunks of at most that many
        examples; their clipped sums are added and noised once, as one step. With
        grouped batches (`grouped=True`) every group is one unit: its mean loss's
        gradient is clipped, and the ledger counts groups.
        """
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        grouped = self.step_options.grouped
        slots = group_slots(x, sample_weight) if grouped else 1
        if not grouped and looks_grouped(self._input_rank(), x, sample_weight):
            raise ValueError(
                f"These batches hold groups ({GROUPED_LAYOUT}), but the model clips each "
                "example: make it with tfdp.make_private(model, grouped=True) for per-group "
                "DP, or build the batches without `groups=`.")
        unit_size = slots * self.step_options.unit_size
        # The rows the model sees: a grouped batch's [groups, slots] blocks flattened.
        rows = flatten_groups((x, y, sample_weight), grouped)
        check_first_step(self, rows[0], self.step_options)  # once per input signature
        optimizer = self._dp_optimizer()
        kind = clip_norm_kind(optimizer.dp_sum_query)
        variables = list(self.trainable_variables)
        fast = self.use_fast_path and optimizer.num_microbatches is None and kind is not None
        if self.step_options.physical_batch_size is not None:
            if not fast:
                raise ValueError(
                    "physical_batch_size needs per-example clipping on the fast path: leave the "
                    "optimizer's num_microbatches at None and use an L2 or L1 clipping query.")
            clipped, nonfinite, loss_sum, y_pred, num_units = self._chunked_clipped_sum(
                optimizer, kind, variables, x, y, sample_weight, slots)
            gradients = optimizer.privatize_clipped_sum(clipped, num_units, num_units, nonfinite)
        else:
            xa, ya, swa = self.step_options.expand(*rows)
            if fast:
                clipped, nonfinite, loss_sum, y_pred, num_units = self._clipped_chunk_sum(
                    optimizer, kind, variables, xa, ya, swa, unit_size)
                gradients = optimizer.privatize_clipped_sum(
                    clipped, num_units, num_units, nonfinite)
            else:
                gradients, loss_sum, y_pred, num_units = self._jacobian_private_gradients(
                    optimizer, variables, xa, ya, swa, unit_size)
        # After the forward pass, so that `add_loss` losses of this call are seen (and refused).
        with tf.GradientTape() as reg_tape:
            regularization = self._weight_penalty()
        if regularization is not None:
            # Weight regularizers do not read the data: adding their gradient after the noise
            # is post-processing and costs no privacy.
            reg_grads = reg_tape.gradient(regularization, [v.value for v in variables],
                                          unconnected_gradients=tf.UnconnectedGradients.ZERO)
            gradients = [g + tf.cast(r, g.dtype) for g, r in zip(gradients, reg_grads)]
        optimizer.apply(gradients, variables)
        if not self.step_options.training_metrics:
            return self._public_logs(optimizer, rows, y_pred)
        count = tf.cast(num_units, loss_sum.dtype)
        mean_loss = tf.math.divide_no_nan(loss_sum, count)
        if regularization is not None:
            mean_loss = mean_loss + tf.cast(regularization, mean_loss.dtype)

        def update_metrics():
            self._loss_tracker.update_state(mean_loss, sample_weight=num_units)
            return self._batch_metrics(rows, y_pred, grouped)

        released = optimizer.step_released()
        if released is None:
            return update_metrics()

        def update_released():
            update_metrics()
            return tf.constant(True)

        # A dropped step releases nothing: not even its loss or metrics (they are noiseless).
        tf.cond(released, update_released, lambda: tf.constant(False))
        return self.get_metrics_result()

    def _public_logs(self, optimizer, rows, y_pred) -> Dict[str, tf.Tensor]:
        """The logs of a step without training metrics: nothing computed from its batch.

        Keras needs a non-empty result from `train_step`; the ledger's step count (applied
        plus dropped steps) depends on no example's data. The compiled metrics are built
        (their variables made, never updated) for `evaluate` and fit's epoch end.
        """
        metrics = self._compile_metrics  # pylint: disable=protected-access
        if metrics is not None and not metrics.built:
            metrics.build(self.step_options.repeat(rows[1]), y_pred)
        steps = optimizer.iterations + optimizer.dropped_steps
        return {"dp_steps": tf.cast(steps, tf.float32)}

    def _batch_metrics(self, rows, y_pred, grouped):
        """Updates the compiled metrics on the step's rows; returns `compute_metrics`'s logs."""
        x, y, sample_weight = rows
        ya, swa = self.step_options.repeat((y, sample_weight))
        if grouped:
            # Keras's plain `metrics` ignore sample weights: leave the empty slots out.
            keep = swa > 0
            ya, y_pred, swa = tf.nest.map_structure(lambda t: tf.boolean_mask(t, keep),
                                                    (ya, y_pred, swa))
        return self.compute_metrics(x, ya, y_pred, sample_weight=swa)

    def _symbolic_build(self, iterator=None, data_batch=None):
        """Keras's build from the first batch's shapes, seeing a grouped batch as its rows.

        Under a tf.distribute strategy Keras builds the metrics from the model's output on
        the first batch before training (a private Keras hook); the model takes the rows
        of a grouped batch, [groups * slots, ...], not its [groups, slots, ...] blocks.
        """
        if self.step_options.grouped:
            if data_batch is None and iterator is not None:
                for _, _, data_or_iterator in iterator:  # as Keras takes the first batch
                    data_batch = (data_or_iterator[0]
                                  if isinstance(data_or_iterator, (list, tuple))
                                  else next(data_or_iterator))
                    break
            if data_batch is not None:
                x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data_batch)
                data_batch = flatten_groups(tf.nest.map_structure(
                    lambda t: None if t is None else tf.convert_to_tensor(t),
                    (x, y, sample_weight)), True)
        return super()._symbolic_build(iterator=iterator, data_batch=data_batch)

    def _input_rank(self) -> Optional[int]:
        """The rank of the model's (first) input with its batch axis, when known."""
        try:
            return len(tf.nest.flatten(self.inputs)[0].shape)
        except (AttributeError, IndexError, TypeError, ValueError):
            return None

    def _row_losses(self, y, y_pred, sample_weight):
        """[rows] one loss per row of the (expanded) batch, its own mean over extra loss axes."""
        values = self.per_example_loss(y, y_pred, sample_weight)
        losses, _, _ = per_unit_losses(values, None)
        return losses

    def _clipped_chunk_sum(self, optimizer, kind, variables, x, y, sample_weight, unit_size):
        """(clipped sum, non-finite units, sum of unit losses, predictions, units) of one chunk.

        Every `unit_size` consecutive rows are one unit (an example's K augmentations, a
        group's slots), whose mean loss's gradient is clipped.
        """
        plan = self._gradient_plan(x)
        with tf.GradientTape(persistent=True) as tape:
            with capture(plan, static_batch_size(x)) as captured:
                y_pred = self(x, training=True)
            row_losses = self._row_losses(y, y_pred, sample_weight)
        query = optimizer.dp_sum_query
        clip = query.derive_sample_params(optimizer.query_global_state())
        _, clipped, nonfinite = clipped_sum(
            tape, captured, plan, variables, row_losses, kind, clip,
            skip_nonfinite=optimizer.on_nonfinite == "skip", unit_size=unit_size)
        del tape
        unit_losses = unit_means(row_losses, unit_size)
        num_units = tf.shape(unit_losses)[0]
        return clipped, nonfinite, tf.reduce_sum(unit_losses), y_pred, num_units

    def _jacobian_private_gradients(self, optimizer, variables, x, y, sample_weight, unit_size):
        """Per-unit (example, group or microbatch) gradients from the Jacobian, clipped and
        noised by the optimizer: for microbatches, queries that clip their own way,
        --nofast_path."""
        handles = [v.value for v in variables]
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(handles)
            y_pred = self(x, training=True)
            row_losses = self._row_losses(y, y_pred, sample_weight)
            example_losses = unit_means(row_losses, unit_size)
            unit_losses, num_units, batch_size = per_unit_losses(
                example_losses, optimizer.num_microbatches, seed=optimizer.microbatch_seed())
        jacobians = tape.jacobian(unit_losses, handles,
                                  unconnected_gradients=tf.UnconnectedGradients.ZERO)
        del tape
        gradients = optimizer.privatize_per_unit_gradients(
            jacobians, unit_losses, num_units, batch_size)
        return gradients, tf.reduce_sum(example_losses), y_pred, batch_size

    def _chunked_clipped_sum(self, optimizer, kind, variables, x, y, sample_weight, slots):
        """The clipped sum over chunks of `physical_batch_size` examples, added in a loop.

        A chunk holds whole units: with grouped batches (`slots` rows per group) it takes
        physical_batch_size // slots groups (at least one).
        """
        grouped = self.step_options.grouped
        m = max(1, self.step_options.physical_batch_size // slots)
        unit_size = slots * self.step_options.unit_size
        n = tf.shape(tf.nest.flatten(x)[0])[0]
        # At least one (possibly empty) chunk, so an empty Poisson batch still is one step.
        num_chunks = tf.maximum((n + m - 1) // m, 1)
        take = lambda nest, i: tf.nest.map_structure(lambda t: t[i * m:(i + 1) * m], nest)  # noqa

        def chunk(i):
            rows = flatten_groups((take(x, i), take(y, i),
                                   None if sample_weight is None else take(sample_weight, i)),
                                  grouped)
            xs, ys, ws = self.step_options.expand(*rows)
            return self._clipped_chunk_sum(optimizer, kind, variables, xs, ys, ws, unit_size)

        # The first chunk outside the loop fixes the structures (and traces the plan).
        clipped0, nonfinite0, loss0, pred0, _ = chunk(tf.constant(0))
        pred_leaves = tf.nest.flatten(pred0)
        arrays = [tf.TensorArray(p.dtype, size=num_chunks, infer_shape=False,
                                 element_shape=tf.TensorShape([None]).concatenate(p.shape[1:]))
                  .write(0, p) for p in pred_leaves]

        def body(i, sums, nonfinite, loss, arrays):
            c, nf, ls, pred, _ = chunk(i)
            arrays = [a.write(i, p) for a, p in zip(arrays, tf.nest.flatten(pred))]
            return (i + 1, [s + g for s, g in zip(sums, c)],
                    nonfinite + tf.cast(nf, nonfinite.dtype), loss + ls, arrays)

        _, sums, nonfinite, loss, arrays = tf.while_loop(
            lambda i, *_: i < num_chunks, body,
            (tf.constant(1), list(clipped0), tf.cast(nonfinite0, tf.int64), loss0, arrays),
            parallel_iterations=1)
        y_pred = tf.nest.pack_sequence_as(pred0, [a.concat() for a in arrays])
        return sums, nonfinite, loss, y_pred, n

    def _gradient_plan(self, x) -> GradientPlan:
        """The plan for this input signature (made once, when the step is first traced)."""
        key = str(tf.nest.map_structure(lambda t: (tuple(t.shape[1:]), t.dtype.name), x))
        plans = self.__dict__.setdefault("_tfdp_plans", {})
        if key not in plans:
            plans[key] = make_plan(self, x)
        return plans[key]


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

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config.update(self.step_options.get_config())
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        options = StepOptions.pop_from_config(config, custom_objects)
        model = super().from_config(config, custom_objects=custom_objects)
        model.step_options = options
        return model


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
        config.update(self.step_options.get_config())
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        options = StepOptions.pop_from_config(config, custom_objects)
        model = keras.saving.deserialize_keras_object(config.pop("model"),
                                                      custom_objects=custom_objects)
        wrapper = cls(model, **config)
        wrapper.step_options = options
        return wrapper


def make_private(model: keras.Model, *, augment: Optional[Callable[[Any], Any]] = None,
                 augmentation_multiplicity: int = 1,
                 physical_batch_size: Optional[int] = None,
                 grouped: bool = False, training_metrics: bool = True) -> keras.Model:
    """Returns a model with the same layers and weights whose `fit` clips per example fast.

    Compile the result with a tfdp DP optimizer and a loss built with
    `reduction=None`. Sequential and functional models become a `PrivateModel`
    on the same graph; a subclassed model is wrapped (`PrivateWrapper`).
    A model that breaks per-example sensitivity is refused (`check_dp_compatible`;
    subclassed models at their first step): BatchNormalization in training mode,
    activity regularizers, and any layer found by probing the training forward pass
    to write data into its variables (running statistics, stateful RNNs) or to mix
    the examples of a batch; a tf-keras (Keras 2) model is refused with advice.

    Args:
      model: a built Keras 3 model.
      augment: a function (or weightless Keras layer/model) applied to each training
        batch before the forward pass, e.g. `keras.Sequential([keras.layers.RandomFlip(),
        keras.layers.RandomTranslation(0.1, 0.1)])`. It must transform every example on
        its own (no mixing of examples, such as mixup: refused) and keep the input shape;
        its randomness must come from Keras seed generators (Keras's Random* layers,
        keras.random ops), which the model check can replay.
      augmentation_multiplicity: K. Each example is repeated K times and augmented;
        its gradient is the mean over its K copies, and that mean is clipped, so the
        sensitivity (and the privacy accounting) is that of one example (De et al.,
        2022). The batch through the model is K times larger.
      physical_batch_size: at most this many examples (times K) go through the model
        at once. A larger (logical) batch is taken in chunks whose clipped sums are
        added and noised once: one step in the ledger, with the logical batch's
        sampling rate. For batches larger than memory; the result is the same.
      grouped: train on grouped batches, `tfdp.data.poisson_batches(x, y, b, groups=ids)`
        (user-level DP, e.g. one id per patient): each group's gradient, of its mean loss
        over its examples, is clipped as one unit, so one group's influence on a step is
        at most the clip whatever its size, and the ledger counts groups. Account with
        the number of groups and the group sampling rate (`PrivacyCallback(num_groups,
        privacy_unit="patient")`).
      training_metrics: True (the default, Keras' convention): `fit` logs the training loss
        and compiled metrics, computed from the private batches WITHOUT noise. They are NOT
        covered by the DP guarantee: whoever sees them (progress bar, History, CSVLogger,
        TensorBoard) sees a noiseless function of the training data. A step the random
        schedule drops (on_skip="drop") never updates them. False: the train step computes
        and returns none; `fit` then logs only validation metrics (and epsilon).
    """
    options = dict(augment=augment, augmentation_multiplicity=augmentation_multiplicity,
                   physical_batch_size=physical_batch_size, grouped=grouped,
                   training_metrics=training_metrics)
    if isinstance(model, PrivateTrainStep):
        if augment is not None or augmentation_multiplicity != 1 or physical_batch_size \
                or grouped or not training_metrics:
            model.set_step_options(**options)
        return model
    if not isinstance(model, keras.Model):
        kind = type(model).__module__ + "." + type(model).__name__
        if "tf_keras" in kind or "keras.src" not in kind and hasattr(model, "fit"):
            raise ValueError(_OTHER_KERAS_ADVICE.format(kind=kind))
        raise ValueError(f"make_private needs a keras.Model, got {type(model).__name__}.")
    check_dp_compatible(model, probe_at_first_step=True)
    if isinstance(model, keras.Sequential):
        try:
            inputs, outputs = model.inputs[0], model.outputs[0]
        except (AttributeError, ValueError, IndexError, TypeError):
            raise ValueError(
                "make_private needs a built Sequential model with known inputs: start it with "
                "keras.Input(shape=...) (or give its first layer input_shape=...), or call "
                "model.build(input_shape) first."
            ) from None
        private = PrivateModel(inputs=inputs, outputs=outputs, name=f"{model.name}_private")
    elif isinstance(model, Functional):
        inputs = model._inputs_struct  # pylint: disable=protected-access
        outputs = model._outputs_struct  # pylint: disable=protected-access
        private = PrivateModel(inputs=inputs, outputs=outputs, name=f"{model.name}_private")
    else:
        if not model.built or not model.weights:
            raise ValueError(
                "make_private needs a built model: call the subclassed model once on a batch "
                "(model(x[:1])) or model.build(input_shape) before wrapping it, so that its "
                "layers and weights exist."
            )
        # Keras scope names may not start with "_" (a class named _Net gives "_net").
        private = PrivateWrapper(model, name=f"{model.name.lstrip('_') or 'model'}_private")
    private.set_step_options(**options)
    share_checks(model, private)
    return private
