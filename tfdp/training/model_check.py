"""The DP model check: refuses a forward pass that breaks per-example sensitivity.

Per-example clipping bounds one example's influence on a step only if (1) each example's
output depends on that example alone, and (2) the training forward pass writes nothing
computed from the data into the model's variables (such a write reaches later steps and
the saved model with no noise). A list of layer classes cannot see a custom layer with
running statistics, a stateful RNN, a `Lambda` that subtracts the batch mean or a
mixup augmentation, so the check probes the forward pass itself:

- **state**: the training forward pass runs on two synthetic batches with different
  inputs; a variable left with different values by the two depends on the data and is
  refused, naming the layer that owns it. Dropout's seed state advances the same way
  whatever the input and is accepted; a BatchNormalization in inference mode (frozen with
  `trainable=False`) writes nothing.
- **mixing**: example 0 of a batch is replaced; the other examples' outputs must not
  change (to float tolerance). The `augment` function of `make_private` is probed the
  same way, on its own.

Every run starts from the same variable values inside a `keras.StatelessScope`, so
variable writes (seed generators included) are collected there and never applied:
randomness drawn from Keras seed generators replays exactly, and the probe leaves no
trace (every variable is also snapshotted and restored, against writes that bypass
Keras). Randomness that cannot be replayed (`tf.random.*` without a Keras seed
generator) leaves the probe unable to decide, which is refused with advice.

BatchNormalization is judged by the probe, not by its class: in inference mode (frozen, or
called with `training=False` inside a subclassed model) it reads only its moving
statistics and passes; in training mode it writes them (or, with momentum 1, mixes the
batch's statistics into every example) and is refused with the ways out.

`check_dp_compatible(model)` runs what needs no data (activity regularizers) and probes
a model whose input shapes are declared; the private train step probes once per input
signature, on the real batch's shapes, before its first step (`check_first_step`).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from tfdp.training.plan import model_layers

# Rows of a probe batch when the input's batch size is not fixed (mixing needs >= 2).
PROBE_ROWS = 3
# A fixed batch size of the step's inputs up to this is kept (a subclassed stateful model).
MAX_STATIC_ROWS = 64
# The length given to input axes of unknown size (e.g. a variable sequence length).
UNKNOWN_AXIS = 8
_SEED = 20240607  # the probe's own NumPy generator: the global random state is untouched

NORMALIZATION_ADVICE = (
    "BatchNormalization in training mode normalizes each example with the statistics of "
    "its batch and writes them into its moving statistics, so one example's gradient "
    "depends on the others (per-example clipping no longer bounds its influence) and the "
    "batch's data reaches the model without noise. Three ways out: (1) freeze it, "
    "`layer.trainable = False` (or `base_model.trainable = False` for a whole backbone): "
    "it then runs in inference mode on its moving statistics and mixes nothing (in Keras 3 "
    "a functional model's `base_model(x, training=False)` does not keep it there when the "
    "outer model trains; freezing does); (2) fold it into the Conv/Dense layer before it "
    "with `tfdp.training.fold_batch_norm(model)`, which keeps the pretrained statistics; "
    "(3) convert it with `tfdp.training.batch_norm_to_group_norm(model)` to "
    "keras.layers.GroupNormalization (or use LayerNormalization) and train it from scratch."
)
_STATE_WHY = (
    "its value after the training forward pass depends on the batch's inputs, so the data "
    "of one batch would reach the next steps and the saved model without noise (and "
    "per-example clipping does not bound it)."
)
_STATEFUL_RNN_ADVICE = (
    " Use stateful=False (pass initial states as inputs if the model needs them)."
)
_STATE_ADVICE = (
    " Make the layer keep no statistics of the data in training (compute them per example, "
    "or freeze it with trainable=False if it then runs in inference mode)."
)
_MIXING_WHY = (
    "changing one example changed the outputs of the other examples of the batch, so one "
    "example's gradient depends on the others and per-example clipping no longer bounds "
    "its influence."
)
_MIXING_ADVICE = (
    " Compute statistics per example (keras.layers.LayerNormalization or GroupNormalization, "
    "reductions over axes other than the batch axis 0)."
)
_AUGMENT_ADVICE = (
    " Use an augmentation that transforms every example on its own (e.g. Keras's Random* "
    "preprocessing layers); mixup or cutmix across examples is not differentially private "
    "with per-example clipping."
)
_REPLAY_ADVICE = (
    "two training-mode runs on the same batch, from the same variable values, gave different "
    "results, so it draws randomness that cannot be replayed (such as tf.random.* or NumPy "
    "random numbers inside a layer or the augment function), and the check cannot tell its "
    "randomness from examples mixing or from data written into its variables. Use Keras's "
    "seeded random layers (keras.layers.Dropout, GaussianNoise, RandomFlip, "
    "RandomTranslation, ...) or keras.random.* ops with a keras.random.SeedGenerator kept "
    "on the layer."
)


def check_dp_compatible(model: keras.Model, *, probe_at_first_step: bool = False) -> None:
    """Raises ValueError for layers that break per-example sensitivity.

    Refuses activity regularizers by inspection; a model whose input shapes are all
    declared (a Sequential or functional model) is then probed on synthetic batches: a
    variable written from the data (BatchNormalization in training mode updating its
    moving statistics, running statistics, stateful RNNs), or a forward pass that mixes
    examples, is refused (see the module docstring). A BatchNormalization in inference
    mode (frozen, or called with `training=False`) passes. A subclassed model, or one with
    input axes of unknown size, cannot be probed before its first batch: with
    `probe_at_first_step` (as `make_private`, whose train step probes it then) it is
    left to that probe; otherwise a trainable BatchNormalization in it is refused, since
    whether it runs in inference mode is only seen when it runs.
    """
    for layer in model_layers(model):
        if getattr(layer, "activity_regularizer", None) is not None:
            raise ValueError(
                f"Layer {layer.name!r} has an activity_regularizer, a loss that depends on the "
                "whole batch's data outside the per-example losses; remove it for DP training."
            )
    spec = _declared_spec(model)
    if spec is not None:
        probe_model(model, spec)
        _checked(model).add(signature_key(spec))
    elif not probe_at_first_step:
        _refuse_trainable_batch_norm(model_layers(model), "before its first batch")


def _refuse_trainable_batch_norm(layers, when: str) -> None:
    """Refuses a trainable BatchNormalization when the probe cannot see its mode."""
    for layer in layers:
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable:
            raise ValueError(
                f"Layer {layer.name!r}: the model cannot be probed {when}, so tfdp cannot "
                "check that this trainable BatchNormalization runs in inference mode. "
                + NORMALIZATION_ADVICE)


def check_first_step(model: keras.Model, x: Any, options: Any = None) -> None:
    """Probes `model` (and `options.augment`) once per input signature of `x`.

    Called by the private train step with the rows the model sees, while the step is
    traced: the probe runs eagerly, outside the traced graph, on synthetic batches of
    `x`'s shape and dtype. Raises ValueError as `check_dp_compatible`.
    """
    key = signature_key(x)
    checked = _checked(model)
    augment = getattr(options, "augment", None)
    augment_key = (key, id(augment), getattr(options, "augmentation_multiplicity", 1))
    if key in checked and (augment is None or augment_key in checked):
        return
    with tf.init_scope():
        if key not in checked:
            probe_model(model, x)
            checked.add(key)
        if augment is not None and augment_key not in checked:
            probe_augment(options, x)
            checked.add(augment_key)


def share_checks(source: keras.Model, target: keras.Model) -> None:
    """Marks the signatures probed on `source` as probed on `target` (same layers)."""
    _checked(target).update(_checked(source))


def signature_key(x: Any) -> str:
    """The input signature without the batch axis (as the gradient plan is keyed)."""
    return str(tf.nest.map_structure(lambda t: (tuple(t.shape[1:]), t.dtype.name), x))


def probe_model(model: keras.Model, x: Any) -> None:
    """Probes the training forward pass of `model` on batches shaped like `x`.

    Raises ValueError when a variable's value after the pass depends on the inputs,
    when the pass mixes examples, or when its randomness cannot be replayed.
    """
    batches = _probe_batches(x, _probe_rows(model, x))
    layers = model_layers(model)
    if batches is None:
        _refuse_trainable_batch_norm(layers, "on inputs of this dtype")
        return
    _probe(lambda t: model(t, training=True), list(model.variables), batches, layers, 1,
           describe="The model", owners=layers, augment=False)


def probe_augment(options: Any, x: Any) -> None:
    """Probes the step's augmentation (`options.expand`) as the model is probed.

    Each example is repeated K times before augmenting (augmentation multiplicity);
    the K copies of an example may depend on each other, other examples' may not.
    """
    batches = _probe_batches(x, PROBE_ROWS)
    if batches is None:
        return
    augment = options.augment
    variables = list(getattr(augment, "variables", []) or [])
    layers = model_layers(augment) if isinstance(augment, keras.Model) else []
    if isinstance(augment, keras.layers.Layer) and not isinstance(augment, keras.Model):
        layers = [augment]
    _probe(lambda t: options.expand(t, None, None)[0], variables, batches, layers,
           options.unit_size, describe="The augmentation (`augment`)", owners=layers,
           augment=True)


# ----- the probe -----


def _probe(fn: Callable[[Any], Any], variables: List[Any], batches, layers, unit: int, *,
           describe: str, owners, augment: bool) -> None:
    a, b, mixed = batches
    first, states_a, trail_a = _run(fn, variables, a, layers)
    again, states_again, _ = _run(fn, variables, a, layers)
    if not (_all_close(first, again) and _states_close(states_a, states_again)):
        raise ValueError(f"{describe} cannot be checked for differential privacy: "
                         + _REPLAY_ADVICE)
    _, states_b, _ = _run(fn, variables, b, layers)
    for variable, value, other in _paired(states_a, states_b):
        if not _close(value, other):
            raise ValueError(_state_message(variable, owners, augment))
    out_mixed, _, trail_mixed = _run(fn, variables, mixed, layers)
    if not _rows_unchanged(first, out_mixed, unit):
        culprit = _first_mixing_layer(trail_a, trail_mixed, unit)
        where = f" (first seen at layer {culprit.name!r}, {type(culprit).__name__})" \
            if culprit is not None else ""
        if isinstance(culprit, keras.layers.BatchNormalization):
            raise ValueError(f"Layer {culprit.name!r}: {NORMALIZATION_ADVICE}")
        advice = _AUGMENT_ADVICE if augment else _MIXING_ADVICE
        raise ValueError(f"{describe} mixes examples across the batch{where}: "
                         + _MIXING_WHY + advice)


class _RecordingScope(keras.StatelessScope):
    """A StatelessScope that also keeps the variables written (not only their ids)."""

    def __init__(self):
        super().__init__()
        self.written: Dict[int, Any] = {}

    def add_update(self, update):
        self.written[id(update[0])] = update[0]
        super().add_update(update)


def _run(fn, variables, inputs, layers):
    """fn(inputs) from the current variable values, leaving them untouched.

    Returns (output leaves as NumPy, {id: (variable, value after)} for every variable
    known or written, [(layer, output leaves)] in the order layer calls finished).
    """
    before = {id(v): (v, np.array(v.numpy())) for v in variables}
    trail: List[Tuple[Any, List[np.ndarray]]] = []
    try:
        with _recorded(layers, trail), _RecordingScope() as scope:
            outputs = fn(inputs)
            written = {key: (v, scope.get_current_value(v)) for key, v in scope.written.items()}
    except Exception as error:  # pylint: disable=broad-except
        raise ValueError(
            "tfdp's DP check of the model could not run the training forward pass on a "
            "synthetic batch of the inputs' shape and dtype "
            f"({_shapes(inputs)}): {type(error).__name__}: {error}") from error
    finally:
        changed = _restore(before)
    states = {key: (v, value) for key, (v, value) in before.items()}
    states.update({key: (v, np.asarray(value)) for key, (v, value) in written.items()})
    states.update(changed)  # written behind Keras's back (then restored)
    return _leaves(outputs), states, trail


def _restore(before) -> Dict[int, Tuple[Any, np.ndarray]]:
    """Puts back every variable whose value changed; returns {id: (variable, changed value)}."""
    changed = {}
    for key, (variable, value) in before.items():
        now = variable.numpy()
        if not np.array_equal(now, value, equal_nan=value.dtype.kind in "fc"):
            changed[key] = (variable, np.array(now))
            variable.assign(value)
    return changed


@contextlib.contextmanager
def _recorded(layers: Sequence[keras.layers.Layer], trail: list):
    """Records every layer call's output leaves, in the order the calls finish."""
    patched = []

    def make_call(layer, original):
        def call(*args, **kwargs):
            output = original(*args, **kwargs)
            trail.append((layer, _leaves(output)))
            return output
        return call

    try:
        for layer in layers:
            layer.call = make_call(layer, layer.call)
            patched.append(layer)
        yield
    finally:
        for layer in patched:
            del layer.call


def _first_mixing_layer(trail_a, trail_mixed, unit) -> Optional[keras.layers.Layer]:
    """The first layer call (innermost, in order) whose output mixed examples."""
    if len(trail_a) != len(trail_mixed):
        return None
    for (layer, out_a), (_, out_m) in zip(trail_a, trail_mixed):
        if not _rows_unchanged(out_a, out_m, unit):
            return layer
    return None


# ----- comparisons -----


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal, up to float round-off for floating-point values."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    if a.dtype.kind not in "fc" and a.dtype.name != "bfloat16":
        return bool(np.array_equal(a, b))
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    rtol = 1e-5 if a.dtype.itemsize >= 4 else 1e-2
    scale = max(float(np.nanmax(np.abs(a64))) if a64.size and not np.all(np.isnan(a64)) else 0.0,
                1.0)
    return bool(np.allclose(a64, b64, rtol=rtol, atol=rtol * scale, equal_nan=True))


def _all_close(xs: List[np.ndarray], ys: List[np.ndarray]) -> bool:
    return len(xs) == len(ys) and all(_close(x, y) for x, y in zip(xs, ys))


def _paired(xs, ys):
    """(variable, value in xs, value in ys) for every variable of either run; a variable
    written in one run only holds its current value in the other."""
    for key in list(xs) + [k for k in ys if k not in xs]:
        variable = (xs.get(key) or ys.get(key))[0]
        unwritten = None if key in xs and key in ys else np.asarray(variable.numpy())
        yield (variable, xs[key][1] if key in xs else unwritten,
               ys[key][1] if key in ys else unwritten)


def _states_close(xs, ys) -> bool:
    return all(_close(a, b) for _, a, b in _paired(xs, ys))


def _rows_unchanged(xs: List[np.ndarray], ys: List[np.ndarray], unit: int) -> bool:
    """Rows from `unit` on (every example but the first) are the same in both outputs."""
    if len(xs) != len(ys):
        return False
    for x, y in zip(xs, ys):
        if x.shape != y.shape:
            return False
        if x.ndim == 0 or x.shape[0] <= unit:
            continue  # not batch-major (or nothing after the first example)
        if not _close(x[unit:], y[unit:]):
            return False
    return True


def _leaves(nest) -> List[np.ndarray]:
    return [np.asarray(t) for t in tf.nest.flatten(nest)
            if isinstance(t, (tf.Tensor, np.ndarray, keras.Variable))]


# ----- messages -----


def _owner(variable, layers) -> Optional[keras.layers.Layer]:
    """The innermost layer whose variables (or attributes) hold `variable`."""
    holding = [layer for layer in layers
               if any(w is variable for w in layer.variables) or _holds(layer, variable)]
    if holding:
        return min(holding, key=lambda layer: len(layer.variables))
    parts = (getattr(variable, "path", None) or variable.name).split("/")
    names = {layer.name: layer for layer in layers}
    return next((names[p] for p in reversed(parts[:-1]) if p in names), None)


def _holds(layer, variable) -> bool:
    """Whether an attribute of `layer` (or a list/tuple in one) is `variable` (untracked state,
    such as a stateful RNN's)."""
    for value in vars(layer).values():
        if value is variable:
            return True
        if isinstance(value, (list, tuple)) and any(v is variable for v in tf.nest.flatten(value)):
            return True
    return False


def _state_message(variable, layers, augment: bool) -> str:
    owner = _owner(variable, layers)
    path = getattr(variable, "path", None) or variable.name
    if owner is None:
        where = "The augmentation (`augment`)" if augment else "The model"
        return f"{where} writes variable {path!r} in training: {_STATE_WHY}" + _STATE_ADVICE
    if isinstance(owner, keras.layers.BatchNormalization):
        return f"Layer {owner.name!r}: {NORMALIZATION_ADVICE}"
    advice = _STATEFUL_RNN_ADVICE if getattr(owner, "stateful", False) else _STATE_ADVICE
    return (f"Layer {owner.name!r} ({type(owner).__name__}) writes its variable {path!r} in "
            f"training: {_STATE_WHY}" + advice)


# ----- probe batches -----


def _checked(model) -> set:
    # Bypasses Keras's attribute tracking, as the gradient plans' cache does.
    return model.__dict__.setdefault("_tfdp_checked", set())


def _declared_spec(model: keras.Model):
    """The model's input spec when every axis but the batch axis is known, else None."""
    try:
        if isinstance(model, keras.Sequential):
            inputs = model.inputs[0]
        else:
            inputs = getattr(model, "_inputs_struct", None)
    except (AttributeError, ValueError, IndexError, TypeError):
        return None
    if inputs is None:
        return None
    leaves = tf.nest.flatten(inputs)
    if not leaves or any(None in tuple(t.shape[1:]) for t in leaves):
        return None
    return tf.nest.map_structure(
        lambda t: tf.TensorSpec(tuple(t.shape), tf.as_dtype(t.dtype)), inputs)


def _probe_rows(model: keras.Model, x: Any) -> int:
    """The probe's batch size: the model's declared batch size (a stateful RNN needs it),
    else a small fixed batch size of `x`, else PROBE_ROWS (the probe stays cheap)."""
    spec = _declared_spec(model)
    for t in tf.nest.flatten(spec) if spec is not None else []:
        if t.shape[0] is not None:
            return int(t.shape[0])
    for t in tf.nest.flatten(x):
        if t.shape.rank and t.shape[0] is not None and 2 <= t.shape[0] <= MAX_STATIC_ROWS:
            return int(t.shape[0])
    return PROBE_ROWS


def _probe_batches(x: Any, rows: int):
    """(a, b, mixed): synthetic batches shaped like `x`; b differs from a, and mixed is a
    with example 0 taken from b. None when an input's dtype cannot be synthesized."""
    rng = np.random.default_rng(_SEED)
    made = []
    for t in tf.nest.flatten(x):
        one = _synthetic(t, rows, rng)
        if one is None:
            warnings.warn(
                f"tfdp cannot make probe batches for an input of dtype {t.dtype!r} "
                f"({type(t).__name__}): the model is not probed for data written into its "
                "variables or for examples mixed in a batch; only BatchNormalization and "
                "activity regularizers were checked. Make sure no layer keeps statistics of "
                "the data or mixes examples.", stacklevel=3)
            return None
        made.append(one)
    return tuple(tf.nest.pack_sequence_as(x, [m[i] for m in made]) for i in range(3))


def _synthetic(t, rows: int, rng: np.random.Generator):
    """Three tensors of t's dtype: a, b (different everywhere in row 0), a with b's row 0.

    Floats are drawn in [0, 2) (valid after a cast to indices, as Embedding does); integers
    and booleans are 0 or 1, valid ids for any vocabulary.
    """
    if isinstance(t, (tf.SparseTensor, tf.RaggedTensor)):
        return None
    dtype = tf.as_dtype(t.dtype)
    shape = [rows] + [UNKNOWN_AXIS if d is None else int(d) for d in t.shape[1:]]
    if dtype.is_floating or dtype.is_complex:
        a, b = rng.uniform(0.0, 2.0, shape), rng.uniform(0.0, 2.0, shape)
        b[0] = np.where(np.abs(b[0] - a[0]) < 0.1, a[0] + 0.5, b[0])
    elif dtype.is_integer or dtype.is_bool:
        a, b = rng.integers(0, 2, shape), rng.integers(0, 2, shape)
        b[0] = 1 - a[0]
    else:
        return None  # strings and other inputs: see _probe_batches
    mixed = a.copy()
    mixed[0] = b[0]
    return tuple(tf.cast(tf.constant(v), dtype) for v in (a, b, mixed))


def _shapes(inputs) -> str:
    return ", ".join(f"{t.dtype.name}{list(t.shape)}" for t in tf.nest.flatten(inputs))
