"""The `serving_default` signature: one named input, class probabilities and the predicted class.

The SavedModel is written from a bare `tf.Module` that holds the model's variables
(the tf.Variables inside Keras 3's variables, seed states included) and a `tf.function` calling the Keras model with `training=False` (so noise layers
that act only in training, dropout and the like are off). No Keras or tfdp object
is serialized, so TF Serving and `tf.saved_model.load` need neither Keras nor tfdp.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Tuple

import keras
import tensorflow as tf

from tfdp.attacks._predictions import declared_output_kind

SIGNATURE_NAME = "serving_default"
PROBABILITIES = "probabilities"
CLASSES = "classes"
DEFAULT_INPUT_NAME = "inputs"


@dataclasses.dataclass(frozen=True)
class ServingInfo:
    """What the serving signature takes and returns (also written to the privacy record)."""

    input_name: str
    input_shape: Tuple[Optional[int], ...]
    input_dtype: str
    num_outputs: int
    num_classes: int
    from_logits: bool

    def to_dict(self) -> Dict[str, Any]:
        """JSON-friendly description of the signature."""
        if self.num_outputs == 1:
            how = ("[1 - sigmoid(z), sigmoid(z)] of the single logit z" if self.from_logits else
                   "[1 - p, p] of the single probability output p")
        else:
            how = "softmax of the logits" if self.from_logits else "the model's probabilities"
        return {
            "signature_name": SIGNATURE_NAME,
            "input": {"name": self.input_name, "dtype": self.input_dtype,
                      "shape": list(self.input_shape)},
            "outputs": {
                PROBABILITIES: {"dtype": "float32", "shape": [None, self.num_classes],
                                "meaning": f"class probabilities: {how}"},
                CLASSES: {"dtype": "int64", "shape": [None],
                          "meaning": "predicted class index (argmax)"},
            },
            "model_outputs": "logits" if self.from_logits else "probabilities",
        }


def _single(values: Any, what: str) -> Any:
    if isinstance(values, (list, tuple)):
        if len(values) != 1:
            raise ValueError(
                f"The model has {len(values)} {what}s; the serving export supports models with "
                f"one input and one output (a classifier)."
            )
        return values[0]
    return values


def _symbolic(tensors: Any, what: str) -> Optional[Tuple[tf.TensorShape, tf.DType]]:
    """(shape, dtype) of a functional model's single symbolic input or output, or None."""
    if not tensors:
        return None
    tensor = _single(list(tf.nest.flatten(tensors)), what)
    # Keras 3 KerasTensors give the shape as a tuple and the dtype as a string.
    return tf.TensorShape(tensor.shape), tf.as_dtype(tensor.dtype)


def _built_input_shape(model: keras.Model) -> Optional[tf.TensorShape]:
    """The input shape a subclassed model was built with (its build config), or None."""
    config = model.get_build_config() or {}
    if "input_shape" not in config:
        # Never called, or called with several arguments; a PrivateWrapper's inner model
        # may know its shape.
        wrapped = getattr(model, "wrapped", None)
        if isinstance(wrapped, keras.Model) and getattr(wrapped, "built", False):
            return _input_spec_parts(wrapped)[0]
        return None
    shape = config["input_shape"]
    if isinstance(shape, (list, tuple)) and shape and isinstance(shape[0], (list, tuple)):
        shape = _single(list(shape), "input")
    if isinstance(shape, dict):
        shape = _single(list(shape.values()), "input")
    return tf.TensorShape(shape)


def _input_spec_parts(model: keras.Model) -> Tuple[Optional[tf.TensorShape], tf.DType]:
    symbolic = _symbolic(getattr(model, "inputs", None), "input")
    if symbolic is not None:
        return symbolic
    # A subclassed model declares no input dtype; Keras's default float type.
    return _built_input_shape(model), tf.as_dtype(keras.config.floatx())


def _is_built(model: keras.Model) -> bool:
    # make_private's wrapper of a built subclassed model is built once it is first called;
    # until then the model it wraps (same layers, same call) tells its shape.
    wrapped = getattr(model, "wrapped", None)
    return bool(getattr(model, "built", False)
                or isinstance(wrapped, keras.Model) and getattr(wrapped, "built", False))


def _input_spec(model: keras.Model, input_name: str) -> tf.TensorSpec:
    if not _is_built(model):
        raise ValueError(
            f"Model {model.name!r} is not built, so its input shape is unknown. Build it first: "
            "start it with keras.Input(shape=...), call model.build((None, ...)) or call the "
            "model on a batch."
        )
    try:
        shape, dtype = _input_spec_parts(model)
    except (AttributeError, TypeError):
        shape, dtype = None, None
    if shape is None:
        raise ValueError(
            f"Model {model.name!r} is built but its input shape is unknown (a subclassed "
            "model never called on data). Call it on a batch once, or wrap it in a "
            "functional model with keras.Input."
        )
    if shape.rank is None or shape.rank < 1:
        raise ValueError(f"Model {model.name!r} has input shape {shape}; the export needs a batch "
                         "axis and known rank.")
    return tf.TensorSpec([None] + shape.as_list()[1:], dtype, name=input_name)


def _output_width(model: keras.Model, spec: tf.TensorSpec) -> int:
    symbolic = _symbolic(getattr(model, "outputs", None), "output")
    # A subclassed model has no symbolic outputs: run it once to see.
    shape = symbolic[0] if symbolic is not None else tf.TensorShape(None)
    if shape.rank is None or shape.rank == 2 and shape[1] is None:
        if not spec.shape[1:].is_fully_defined():
            raise ValueError(f"Model {model.name!r} has no known output width; the export needs "
                             "(batch, num_classes) outputs.")
        probe = model(tf.zeros([1] + spec.shape.as_list()[1:], spec.dtype), training=False)
        shape = tf.TensorShape(_single(probe, "output").shape)
    if shape.rank == 1:
        return 1
    if shape.rank != 2 or shape[1] is None or shape[1] < 1:
        raise ValueError(
            f"Model {model.name!r} outputs shape {shape}; the serving export needs a classifier "
            "with outputs (batch, num_classes), or (batch, 1) for a binary one."
        )
    return int(shape[1])


def resolve_from_logits(model: keras.Model, from_logits: Optional[bool]) -> bool:
    """Whether the model outputs logits, from its last layer (or as given; checked against it)."""
    if from_logits is not None and not isinstance(from_logits, bool):
        raise ValueError(f"`from_logits` must be True, False or None (detect), got "
                         f"{from_logits!r}.")
    declared = declared_output_kind(model)
    if from_logits is None:
        if declared is None:
            raise ValueError(
                f"Cannot tell whether model {model.name!r} outputs logits or probabilities from "
                "its last layer; pass from_logits=True (logits) or False (softmax/sigmoid "
                "probabilities)."
            )
        return declared == "logits"
    if declared is not None and from_logits != (declared == "logits"):
        raise ValueError(
            f"`from_logits={from_logits}` contradicts model {model.name!r}'s last layer, which "
            f"outputs {declared}. Pass from_logits={declared == 'logits'} (or None to detect)."
        )
    return from_logits


def describe_serving(
    model: keras.Model, *, input_name: str = DEFAULT_INPUT_NAME,
    from_logits: Optional[bool] = None,
) -> ServingInfo:
    """Checks that `model` can be served as a classifier and describes its signature."""
    if not isinstance(model, keras.Model):
        raise ValueError(f"`model` must be a keras.Model, got {type(model).__name__}.")
    if not isinstance(input_name, str) or not input_name.isidentifier():
        raise ValueError(f"`input_name` must be a Python-identifier-like name such as 'inputs', "
                         f"got {input_name!r}.")
    spec = _input_spec(model, input_name)
    width = _output_width(model, spec)
    logits = resolve_from_logits(model, from_logits)
    return ServingInfo(
        input_name=input_name,
        input_shape=tuple(spec.shape.as_list()),
        input_dtype=spec.dtype.name,
        num_outputs=width,
        num_classes=max(width, 2),
        from_logits=logits,
    )


def _tf_variable(variable: Any) -> Any:
    """The tf.Variable inside a Keras 3 variable (the TF backend keeps one in `.value`).

    The traced function reads that tf.Variable. Saving the Keras wrapper instead would
    write a copy under another name, which TF1-style loaders (saved_model_cli run,
    TF Serving's session bundle) then never restore for the function's reads.
    """
    inner = getattr(variable, "value", None)
    return inner if isinstance(inner, tf.Variable) else variable


def serving_module(model: keras.Model, info: ServingInfo) -> Tuple[tf.Module, Any]:
    """A tf.Module holding the model's variables and its `serve` tf.function; and its signature."""
    spec = tf.TensorSpec([None] + list(info.input_shape[1:]), tf.as_dtype(info.input_dtype),
                         name=info.input_name)

    @tf.function(input_signature=[spec])
    def serve(inputs):
        outputs = tf.cast(model(inputs, training=False), tf.float32)
        if outputs.shape.rank == 1:
            outputs = outputs[:, None]
        if info.num_outputs == 1:
            z = outputs[:, 0]
            p = tf.sigmoid(z) if info.from_logits else tf.clip_by_value(z, 0.0, 1.0)
            probabilities = tf.stack([1.0 - p, p], axis=1)
            classes = tf.cast(z > 0.0 if info.from_logits else p > 0.5, tf.int64)
        else:
            probabilities = tf.nn.softmax(outputs, axis=-1) if info.from_logits else outputs
            # argmax of the raw outputs: softmax can saturate two classes to the same 1.0.
            classes = tf.argmax(outputs, axis=-1, output_type=tf.int64)
        return {PROBABILITIES: probabilities, CLASSES: classes}

    module = tf.Module(name="tfdp_serving")
    # Tracking the variables (not the Keras model) keeps Keras and tfdp out of the SavedModel.
    module.model_variables: List[tf.Variable] = [_tf_variable(v) for v in model.variables]
    module.serve = serve
    return module, serve.get_concrete_function()
