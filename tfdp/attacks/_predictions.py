"""Model outputs on a data set, turned into log-probabilities and integer labels.

Shared by the membership-inference attacks and the utility metrics, so both read a
model's outputs the same way: logits or probabilities, one sigmoid/logit output
(binary) or one output per class (softmax/logits), any number of examples, in
batches.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Optional, Tuple

import numpy as np
import keras
import tensorflow as tf
from scipy import special

from tfdp._validation import check_positive_int

# Softmax outputs in float32 sum to 1 up to rounding; the TF Privacy attack library
# uses the same tolerance to tell probabilities from logits.
_SUM_TOLERANCE = 1e-3
_RANGE_TOLERANCE = 1e-6
# log(0) guard for probabilities that underflowed to exactly 0.
_SMALLEST_PROBABILITY = 1e-30

DATA_HELP = (
    "Pass an `(x, y)` tuple of arrays or a tf.data.Dataset yielding `(x, y)` batches."
)


@dataclasses.dataclass
class Predictions:
    """A model's outputs on one data set.

    Attributes:
      log_probs: float64 array (num_examples, num_classes) of normalized
        log-probabilities; a binary model with one output gets two columns
        [log P(y=0), log P(y=1)].
      labels: int64 array (num_examples,) of class indices.
      from_logits: how the raw outputs were read (True = logits).
      label_shape: per-example shape of the labels as given, e.g. () or (10,).
    """

    log_probs: np.ndarray
    labels: np.ndarray
    from_logits: bool
    label_shape: Tuple[int, ...]

    @property
    def num_examples(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.log_probs.shape[1])

    @property
    def probs(self) -> np.ndarray:
        """Probabilities, rows renormalized to sum to exactly 1."""
        probs = np.exp(self.log_probs)
        return probs / probs.sum(axis=1, keepdims=True)

    @property
    def loss(self) -> np.ndarray:
        """Per-example cross-entropy, -log P(true class)."""
        return -self.log_probs[np.arange(self.num_examples), self.labels]


def pool_arrays(data: Any) -> Tuple[np.ndarray, np.ndarray]:
    """A pool of examples as `(x, y)` NumPy arrays of the same length (the attacks' input).

    Accepts an `(x, y)` tuple or list, or a `tfdp.data.Dataset` (its training split: the
    private data an attack trains its own models on). Raises ValueError saying what to
    pass otherwise.
    """
    if hasattr(data, "x_train") and hasattr(data, "y_train"):
        data = (data.x_train, data.y_train)
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError(
            f"`data` has type {type(data).__name__}; pass the pool of examples as an `(x, y)` "
            "tuple of NumPy arrays (or a tfdp.data.Dataset, whose training split is used)."
        )
    x, y = (np.asarray(a) for a in data)
    if x.ndim == 0 or y.ndim == 0:
        raise ValueError("`data` must hold arrays with one row per example, not scalars.")
    if len(x) != len(y):
        raise ValueError(
            f"`data` has {len(x)} inputs x but {len(y)} labels y: give one label per example."
        )
    if x.dtype == object:
        raise ValueError("The inputs x must be a single numeric array, not an object array.")
    return x, y


def _iterate_batches(data: Any, batch_size: int, name: str) -> Iterator[Tuple[Any, np.ndarray]]:
    """Yields `(x_batch, y_batch)` from an `(x, y)` tuple or a batched tf.data.Dataset."""
    if isinstance(data, tf.data.Dataset):
        spec = data.element_spec
        if not isinstance(spec, tuple) or len(spec) != 2:
            raise ValueError(
                f"`{name}` must be a tf.data.Dataset of `(x, y)` batches; its elements are "
                f"{spec}. Map it to `(x, y)` pairs (sample weights are not used here)."
            )
        label_spec = spec[1]
        if isinstance(label_spec, tf.TensorSpec) and label_spec.shape.rank == 0:
            raise ValueError(
                f"`{name}` looks unbatched (its labels are scalars); call `.batch(n)` on it first."
            )
        for x_batch, y_batch in data:
            yield x_batch, np.asarray(y_batch)
        return
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError(f"`{name}` has type {type(data).__name__}. {DATA_HELP}")
    x, y = data
    leaves = tf.nest.flatten(x)
    if not leaves:
        raise ValueError(f"`{name}` has no inputs x. {DATA_HELP}")
    num_examples = len(leaves[0])
    if any(len(leaf) != num_examples for leaf in leaves):
        raise ValueError(f"The inputs of `{name}` have different numbers of examples.")
    y = np.asarray(y)
    if y.ndim == 0 or len(y) != num_examples:
        raise ValueError(
            f"`{name}` has {num_examples} inputs but labels of shape {y.shape}: give one "
            "label per example."
        )
    for start in range(0, num_examples, batch_size):
        stop = start + batch_size
        yield tf.nest.map_structure(lambda a: a[start:stop], x), y[start:stop]


def model_outputs(model: Any, data: Any, batch_size: int, name: str) -> Tuple[np.ndarray, np.ndarray]:
    """Runs the model (inference mode) over the data; returns raw outputs (n, c) and labels."""
    outputs, labels = [], []
    for x_batch, y_batch in _iterate_batches(data, batch_size, name):
        out = model(x_batch, training=False)
        if isinstance(out, (dict, list, tuple)):
            raise ValueError(
                "The model returns several outputs; membership inference and utility metrics "
                "need a single-output classifier (logits or probabilities)."
            )
        out = np.asarray(out, dtype=np.float64)
        if out.ndim == 1:
            out = out[:, None]
        if out.ndim != 2:
            raise ValueError(
                f"The model's outputs have shape {out.shape}; expected (batch, num_classes) or "
                "(batch, 1) for a binary classifier."
            )
        if out.shape[0] != len(y_batch):
            raise ValueError(
                f"In `{name}`, a batch of {len(y_batch)} labels gave {out.shape[0]} model outputs."
            )
        outputs.append(out)
        labels.append(y_batch)
    if not outputs or sum(len(o) for o in outputs) == 0:
        raise ValueError(f"`{name}` is empty: it needs at least one example.")
    widths = {o.shape[1] for o in outputs}
    if len(widths) != 1:
        raise ValueError(f"The model's output width changed between batches: {sorted(widths)}.")
    label_shapes = {l.shape[1:] for l in labels}
    if len(label_shapes) != 1:
        raise ValueError(f"The labels in `{name}` change shape between batches: {label_shapes}.")
    return np.concatenate(outputs), np.concatenate(labels)


def declared_output_kind(model: Any) -> Optional[str]:
    """'probabilities' or 'logits' if the model's last layer says so, else None.

    A final softmax/sigmoid (as a Dense activation, an Activation layer or a Softmax
    layer) means probabilities; a final linear activation means logits.
    """
    layers = getattr(model, "layers", None)
    if not layers:
        return None
    last = layers[-1]
    if isinstance(last, keras.layers.Softmax):
        return "probabilities"
    if getattr(last, "layers", None):  # a nested model as the last layer
        return declared_output_kind(last)
    activation = getattr(last, "activation", None)
    activation_name = getattr(activation, "__name__", None)
    if activation_name in ("softmax", "sigmoid"):
        return "probabilities"
    if activation_name == "linear":
        return "logits"
    return None


def _looks_like_probabilities(outputs: np.ndarray) -> bool:
    in_range = np.all(outputs >= -_RANGE_TOLERANCE) and np.all(outputs <= 1 + _RANGE_TOLERANCE)
    if outputs.shape[1] == 1:
        return bool(in_range)
    sums_to_one = np.all(np.abs(outputs.sum(axis=1) - 1.0) <= _SUM_TOLERANCE)
    return bool(in_range and sums_to_one)


def resolve_from_logits(outputs: np.ndarray, from_logits: Optional[bool], model: Any = None) -> bool:
    """Decides (or checks) whether `outputs` are logits; raises when they contradict the declaration."""
    if from_logits is not None and not isinstance(from_logits, (bool, np.bool_)):
        raise ValueError(f"`from_logits` must be True, False or None (detect), got {from_logits!r}.")
    if not np.all(np.isfinite(outputs)):
        raise ValueError("The model's outputs contain NaN or infinite values.")
    declared = declared_output_kind(model) if model is not None else None
    if from_logits is None:
        from_logits = (
            declared == "logits" if declared is not None else not _looks_like_probabilities(outputs)
        )
    elif declared is not None and bool(from_logits) != (declared == "logits"):
        raise ValueError(
            f"`from_logits={bool(from_logits)}` contradicts the model's last layer, which outputs "
            f"{declared}. Pass from_logits={declared == 'logits'} (or None to detect)."
        )
    from_logits = bool(from_logits)
    if not from_logits and not _looks_like_probabilities(outputs):
        if outputs.shape[1] == 1:
            detail = f"values range over [{outputs.min():.4g}, {outputs.max():.4g}], not [0, 1]"
        else:
            sums = outputs.sum(axis=1)
            detail = (
                f"rows sum to between {sums.min():.4g} and {sums.max():.4g} (values in "
                f"[{outputs.min():.4g}, {outputs.max():.4g}]), not to 1"
            )
        raise ValueError(
            f"The model's outputs were taken as probabilities (from_logits=False), but {detail}. "
            "If the model outputs logits pass from_logits=True; for probabilities end it with a "
            "softmax (one output per class) or a sigmoid (one output, binary). Multi-label "
            "models are not supported."
        )
    return from_logits


def to_log_probs(outputs: np.ndarray, from_logits: bool) -> np.ndarray:
    """Normalized log-probabilities (n, k >= 2) from logits or probabilities (n, c)."""
    if outputs.shape[1] == 1:
        z = outputs[:, 0]
        if from_logits:
            # log sigmoid(-z), log sigmoid(z), computed without overflow.
            return np.stack([-np.logaddexp(0.0, z), -np.logaddexp(0.0, -z)], axis=1)
        p = np.clip(z, 0.0, 1.0)
        return np.log(np.maximum(np.stack([1.0 - p, p], axis=1), _SMALLEST_PROBABILITY))
    if from_logits:
        return special.log_softmax(outputs, axis=1)
    return np.log(np.maximum(np.clip(outputs, 0.0, 1.0), _SMALLEST_PROBABILITY))


def to_class_indices(labels: np.ndarray, num_classes: int, name: str) -> np.ndarray:
    """Integer class indices from labels of shape (n,), (n, 1) or one-hot (n, num_classes)."""
    labels = np.asarray(labels)
    expected = f"(num_examples,), (num_examples, 1) or one-hot (num_examples, {num_classes})"
    if labels.ndim == 2 and labels.shape[1] == num_classes and num_classes > 1:
        is_binary = np.all((labels == 0) | (labels == 1))
        if not is_binary or not np.all(labels.sum(axis=1) == 1):
            raise ValueError(
                f"The labels of `{name}` have shape {labels.shape} but are not one-hot (each row "
                "needs exactly one 1)."
            )
        return np.argmax(labels, axis=1).astype(np.int64)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise ValueError(
            f"The labels of `{name}` have shape {labels.shape}, which does not match a model with "
            f"{num_classes} classes: expected {expected}."
        )
    if labels.dtype.kind not in "iub":
        if labels.dtype.kind != "f" or not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise ValueError(
                f"The labels of `{name}` must be whole class indices in [0, {num_classes - 1}] "
                f"(or one-hot), got dtype {labels.dtype}."
            )
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"The labels of `{name}` range over [{labels.min()}, {labels.max()}], but the model has "
            f"{num_classes} classes: labels must be in [0, {num_classes - 1}]."
        )
    return labels


def predictions_from_outputs(
    outputs: Any,
    labels: Any,
    *,
    from_logits: Optional[bool] = None,
    model: Any = None,
    name: str = "data",
) -> Predictions:
    """Builds `Predictions` from raw model outputs (n, c) or (n,) and labels."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if outputs.ndim == 1:
        outputs = outputs[:, None]
    if outputs.ndim != 2:
        raise ValueError(f"Outputs of `{name}` have shape {outputs.shape}; expected (n, num_classes).")
    labels = np.asarray(labels)
    if outputs.shape[0] == 0:
        raise ValueError(f"`{name}` is empty: it needs at least one example.")
    if labels.ndim == 0 or labels.shape[0] != outputs.shape[0]:
        raise ValueError(
            f"`{name}` has {outputs.shape[0]} model outputs but labels of shape {labels.shape}: "
            "give one label per example."
        )
    from_logits = resolve_from_logits(outputs, from_logits, model)
    log_probs = to_log_probs(outputs, from_logits)
    class_indices = to_class_indices(labels, log_probs.shape[1], name)
    return Predictions(
        log_probs=log_probs,
        labels=class_indices,
        from_logits=from_logits,
        label_shape=tuple(labels.shape[1:]),
    )


def predict(
    model: Any,
    data: Any,
    *,
    from_logits: Optional[bool] = None,
    batch_size: int = 256,
    name: str = "data",
) -> Predictions:
    """Runs `model` over `data` in batches and returns its `Predictions`."""
    batch_size = check_positive_int("batch_size", batch_size)
    outputs, labels = model_outputs(model, data, batch_size, name)
    return predictions_from_outputs(outputs, labels, from_logits=from_logits, model=model, name=name)
