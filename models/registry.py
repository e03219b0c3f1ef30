"""`build_model(name, input_shape, num_classes)`: every model builder behind one name."""

from __future__ import annotations

from typing import Any, Callable, Dict, Sequence

import keras
import tensorflow as tf

from tfdp.models.backbones import BACKBONES, backbone_classifier
from tfdp.models.cnn import digits_cnn, pneumonia_cnn, tutorial_cnn
from tfdp.models.mlp import linear, mlp, normalized_linear
from tfdp.models.pretrained import (pretrained_linear, prior_last_blocks, prior_linear,
                                    prior_lora)
from tfdp.models.resnet import resnet

_BUILDERS: Dict[str, Callable[..., keras.Model]] = {
    "pneumonia_cnn": pneumonia_cnn,
    "tutorial_cnn": tutorial_cnn,
    "digits_cnn": digits_cnn,
    "mlp": mlp,
    "linear": linear,
    "normalized_linear": normalized_linear,
    "pretrained_linear": pretrained_linear,
    "prior_linear": prior_linear,
    "prior_last_blocks": prior_last_blocks,
    "prior_lora": prior_lora,
    "resnet": resnet,
}

# A keras.applications backbone under a DP head: "backbone:<name>" (keyword arguments go to
# backbone_classifier: weights_path, fine_tune, fine_tune_blocks, lora_rank).
BACKBONE_PREFIX = "backbone:"


def _backbone_builder(name: str) -> Callable[..., keras.Model]:
    def build(input_shape: Sequence[int], num_classes: int, **kwargs: Any) -> keras.Model:
        return backbone_classifier(name, input_shape, num_classes, **kwargs)

    build.__doc__ = (f"keras.applications {BACKBONES[name].builder} (weights from a local file, "
                     "else random) under a zero Dense head.")
    return build


_BUILDERS.update({BACKBONE_PREFIX + name: _backbone_builder(name) for name in BACKBONES})


def available_models() -> Dict[str, str]:
    """Model names `build_model` accepts, with the first line of each docstring."""
    return {name: ((fn.__doc__ or "").strip().splitlines() or [""])[0]
            for name, fn in _BUILDERS.items()}


def register_model(name: str, builder: Callable[..., keras.Model]) -> None:
    """Makes `builder(input_shape, num_classes, **kwargs)` available as `build_model(name, ...)`."""
    _BUILDERS[name] = builder


def default_model_name(input_shape: Sequence[int]) -> str:
    """A sensible model for this input: MLP for vectors, digits CNN for tiny images, else the paper's CNN."""
    shape = tuple(input_shape)
    if len(shape) != 3:
        return "mlp"
    if min(shape[:2]) < 16:
        return "digits_cnn"
    return "pneumonia_cnn"


def build_model(
    name: str, input_shape: Sequence[int], num_classes: int, **kwargs: Any
) -> keras.Model:
    """Builds the named model for `input_shape` and `num_classes`; it outputs logits.

    `name="auto"` picks `default_model_name(input_shape)`. Extra keyword arguments go to
    the builder (e.g. `filters=(32, 64)` for the CNNs, `hidden_units` for the MLP).
    """
    if name == "auto":
        name = default_model_name(input_shape)
    if name not in _BUILDERS:
        raise ValueError(
            f"Unknown model {name!r}. Choose one of: auto, {', '.join(sorted(_BUILDERS))}."
        )
    return _BUILDERS[name](tuple(input_shape), num_classes, **kwargs)
