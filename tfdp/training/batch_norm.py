"""Two ways out for a BatchNormalization that would train on batch statistics.

BatchNormalization in training mode mixes the examples of a batch, which per-example
clipping cannot bound (the model check refuses it). Freezing it (`trainable = False`)
keeps it in inference mode. Two model rewrites give the other ways out:

- `fold_batch_norm(model)`: every BatchNormalization that directly follows a Conv,
  DepthwiseConv or Dense layer (linear activation, its output read by the
  BatchNormalization only) becomes part of that layer: with
  s = gamma * rsqrt(moving_variance + epsilon), the kernel's output channels are scaled by
  s and the bias becomes s * (bias - moving_mean) + beta. The folded model computes the
  inference-mode output of the original (to float round-off) and keeps the pretrained
  statistics; the folded layer trains its new bias per example like any other.
- `batch_norm_to_group_norm(model, groups=32)`: every BatchNormalization becomes a
  GroupNormalization (statistics of each example on its own), for training from scratch.

Both clone Sequential and functional models, nested ones included (keras.applications
models are functional), with `keras.models.clone_model`; every other layer keeps its
weights and trainable flag. A subclassed model is refused: its layer graph is not known.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import keras
import numpy as np
from keras.src.models.functional import Functional

from tfdp.training.plan import model_layers

# Layers a following BatchNormalization folds into: kernel output channels on the last axis.
_FOLDABLE = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
             keras.layers.Dense, keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
_NOT_FOLDABLE = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
                 keras.layers.Conv3DTranspose, keras.layers.SeparableConv1D,
                 keras.layers.SeparableConv2D)


def fold_batch_norm(model: keras.Model) -> keras.Model:
    """A copy of `model` with each BatchNormalization folded into the layer before it.

    A BatchNormalization is folded when it directly follows a Conv1D/2D/3D,
    DepthwiseConv1D/2D or Dense layer whose activation is linear, whose output only
    the BatchNormalization reads, and whose output channel axis it normalizes. It is
    replaced by `keras.layers.Identity` (same name), and the layer before it gets the
    folded kernel and a bias (added if it had none): the copy's output equals the
    original's in inference mode, using the moving statistics (the pretrained ones for
    keras.applications weights). Other BatchNormalization layers (e.g. ResNet50V2's
    pre-activation ones, which follow an Add) are copied unchanged: freeze them
    (`trainable = False`) or convert them with `batch_norm_to_group_norm`.
    Every other layer keeps its weights and trainable flag; the original is untouched.
    """
    _require_graph_model(model, "fold_batch_norm")
    pairs = _foldable_pairs(model)
    folded_bn = {id(bn) for bn, _ in pairs.values()}
    identities = set()
    clones: List[Tuple[keras.layers.Layer, keras.layers.Layer]] = []

    def clone(layer):
        if id(layer) in folded_bn:
            new = keras.layers.Identity(name=layer.name)
            identities.add(id(new))
        elif id(layer) in pairs:
            config = layer.get_config()
            config["use_bias"] = True
            new = type(layer).from_config(config)
        else:
            new = type(layer).from_config(layer.get_config())
        clones.append((layer, new))
        return new

    copy = _clone(model, clone, identities)
    for old, new in clones:
        if id(old) in pairs:
            new.set_weights(_folded_weights(old, pairs[id(old)][0]))
        elif id(old) not in folded_bn:
            _copy_weights(old, new)
    return copy


def batch_norm_to_group_norm(model: keras.Model, groups: int = 32) -> keras.Model:
    """A copy of `model` with every BatchNormalization replaced by GroupNormalization.

    Each GroupNormalization normalizes over the same channel axis with the same
    epsilon, center and scale, keeps the name and trainable flag, and starts from the
    BatchNormalization's gamma and beta. It uses the largest number of groups that is at
    most `groups` and divides the channels (GroupNormalization needs that). Its output
    differs from the BatchNormalization's (statistics per example and group, not moving
    statistics), so this is for training the model from scratch (or fine-tuning it at
    length), not for keeping pretrained behaviour: `fold_batch_norm` keeps that. Every
    other layer keeps its weights and trainable flag; the original is untouched.
    """
    if groups < 1:
        raise ValueError(f"groups must be a positive integer, got {groups}.")
    _require_graph_model(model, "batch_norm_to_group_norm")
    clones: List[Tuple[keras.layers.Layer, keras.layers.Layer]] = []
    replaced = set()

    def clone(layer):
        if isinstance(layer, keras.layers.BatchNormalization):
            new = _group_norm_like(layer, groups)
            replaced.add(id(new))
        else:
            new = type(layer).from_config(layer.get_config())
        clones.append((layer, new))
        return new

    copy = _clone(model, clone, replaced)
    for old, new in clones:
        if isinstance(old, keras.layers.BatchNormalization):
            for mine, theirs in ((new.gamma, old.gamma), (new.beta, old.beta)):
                if mine is not None and theirs is not None:
                    mine.assign(theirs)
        else:
            _copy_weights(old, new)
    return copy


def _clone(model, clone_function, replaced: set) -> keras.Model:
    """clone_model(recursive); a replacing layer (`replaced` ids) is called on the input
    alone: the BatchNormalization's `training` and `mask` arguments do not apply to it."""

    def call(layer, *args, **kwargs):
        if id(layer) in replaced:
            return layer(args[0])
        return layer(*args, **kwargs)

    if isinstance(model, keras.Sequential):  # Keras takes no call_function for Sequential
        return keras.models.clone_model(model, clone_function=clone_function, recursive=True)
    return keras.models.clone_model(model, clone_function=clone_function, recursive=True,
                                    call_function=call)


def _copy_weights(old, new) -> None:
    """The original's weights into its clone (keras.ops operations in a graph have none)."""
    if isinstance(old, keras.layers.Layer) and old.weights:
        new.set_weights(old.get_weights())


def _require_graph_model(model, name: str) -> None:
    if not isinstance(model, (keras.Sequential, Functional)):
        raise ValueError(
            f"{name} rewrites Sequential and functional models (keras.applications models "
            f"are functional); got a subclassed {type(model).__name__}, whose layer graph is "
            "not known. Change the layers in its code instead (or freeze its "
            "BatchNormalization layers with trainable=False).")
    if not model.built:
        raise ValueError(f"{name} needs a built model (give it an Input).")


def _group_norm_like(bn: keras.layers.BatchNormalization, groups: int):
    channels = int(bn.moving_mean.shape[0])
    divisor = max(d for d in range(1, min(groups, channels) + 1) if channels % d == 0)
    return keras.layers.GroupNormalization(
        groups=divisor, axis=bn.axis, epsilon=bn.epsilon, center=bn.center, scale=bn.scale,
        name=bn.name, trainable=bn.trainable, dtype=bn.dtype_policy)


# ----- folding -----


def _foldable_pairs(model) -> Dict[int, Tuple[keras.layers.Layer, keras.layers.Layer]]:
    """{id(layer before): (batch_norm, layer before)} for every foldable pair."""
    outputs = _model_output_ids(model)
    pairs = {}
    for bn in model_layers(model):
        if not isinstance(bn, keras.layers.BatchNormalization) or len(bn._inbound_nodes) != 1:
            continue
        parents = bn._inbound_nodes[0].parent_nodes
        if len(parents) != 1:
            continue
        before = parents[0].operation
        if _can_fold(before, bn, outputs) and id(before) not in pairs:
            pairs[id(before)] = (bn, before)
    return pairs


def _model_output_ids(model) -> set:
    """ids of every (nested) functional model's output tensors: those must stay as they are."""
    ids = set()
    for m in [model] + [m for m in model_layers(model) if isinstance(m, keras.Model)]:
        try:
            ids.update(id(t) for t in keras.tree.flatten(m.outputs))
        except (AttributeError, ValueError):
            continue
    return ids


def _can_fold(before, bn, outputs: set) -> bool:
    if not isinstance(before, _FOLDABLE) or isinstance(before, _NOT_FOLDABLE):
        return False
    if len(before._inbound_nodes) != 1 or len(before._outbound_nodes) != 1:
        return False  # shared layer, or its output is also read elsewhere
    if before.activation is not keras.activations.linear:
        return False  # an activation between the layer and the normalization
    if getattr(before, "lora_enabled", False) or getattr(before, "quantization_mode", None):
        return False
    if any(id(t) in outputs for t in keras.tree.flatten(before._inbound_nodes[0].outputs)):
        return False
    rank = len(before.output.shape)
    channels_first = getattr(before, "data_format", "channels_last") == "channels_first"
    channel_axis = 1 if channels_first else rank - 1
    axis = bn.axis[0] if isinstance(bn.axis, (list, tuple)) and len(bn.axis) == 1 else bn.axis
    return isinstance(axis, int) and axis % rank == channel_axis


def _folded_weights(before, bn) -> List[np.ndarray]:
    """[kernel * s on its output channels, s * (bias - mean) + beta], as before's weights."""
    mean = np.asarray(bn.moving_mean.numpy(), np.float64)
    variance = np.asarray(bn.moving_variance.numpy(), np.float64)
    gamma = np.asarray(bn.gamma.numpy(), np.float64) if bn.scale else np.ones_like(mean)
    beta = np.asarray(bn.beta.numpy(), np.float64) if bn.center else np.zeros_like(mean)
    scale = gamma / np.sqrt(variance + bn.epsilon)
    is_depthwise = isinstance(before, (keras.layers.DepthwiseConv1D,
                                       keras.layers.DepthwiseConv2D))
    kernel = np.asarray(before.kernel.numpy(), np.float64)
    if is_depthwise:  # [..., in, multiplier]: output channel i * multiplier + j
        kernel = kernel * scale.reshape(kernel.shape[-2:])
    else:  # [..., out]
        kernel = kernel * scale
    bias = np.asarray(before.bias.numpy(), np.float64) if before.use_bias else np.zeros_like(mean)
    bias = scale * (bias - mean) + beta
    dtype = before.kernel.dtype
    return [kernel.astype(dtype), bias.astype(dtype)]
