"""Fine-tuning modes for a model with a pretrained part: head only, the last blocks, or LoRA.

    set_fine_tuning(pretrained, mode, blocks, *, num_blocks=1, lora_rank=4) -> FineTuning

Public pretraining and private fine-tuning is the field's answer to DP's cost in accuracy
(Tramer and Boneh, 2021; De et al., 2022). Which part of the pretrained network the private
data may change is a trade-off: more trainable parameters fit the new task better but
take more noise (the noise's norm grows with the square root of the parameter count).

    head          the pretrained part is frozen; only the layers after it train (with
                  `tfdp.make_private` the frozen features are computed once per example)
    last_blocks   the last `num_blocks` blocks of the pretrained part train as well
    lora          those blocks' Dense, EinsumDense, Embedding and convolution kernels stay
                  frozen and train through Keras's LoRA (`layer.enable_lora(rank)`), whose
                  per-example gradients tfdp computes exactly (tfdp/training/rules/lora.py)

A block is a list of layers, given by the caller (the backbones' builders know their own
blocks). BatchNormalization stays frozen in every mode: a frozen BatchNormalization runs on
its pretrained moving statistics (Keras 3 runs a non-trainable one in inference mode), so it
mixes no examples of a batch and writes nothing from private data.
"""

from __future__ import annotations

import dataclasses
from typing import List, Sequence, Tuple, Union

import keras

from tfdp._validation import check_choice, check_positive_int

HEAD, LAST_BLOCKS, LORA = "head", "last_blocks", "lora"
FINE_TUNE_MODES: Tuple[str, ...] = (HEAD, LAST_BLOCKS, LORA)


@dataclasses.dataclass(frozen=True)
class FineTuning:
    """What `set_fine_tuning` made trainable.

    Attributes:
      mode: "head", "last_blocks" or "lora".
      trained_layers: names of the pretrained part's layers that now train (LoRA: the
        layers that carry LoRA weights); empty for "head".
      trainable_parameters: trainable scalars in the pretrained part after the change.
    """

    mode: str
    trained_layers: Tuple[str, ...]
    trainable_parameters: int


def supports_lora(layer: keras.layers.Layer) -> bool:
    """True when Keras can put LoRA on `layer` (Dense, EinsumDense, Embedding, ConvND)."""
    return callable(getattr(layer, "enable_lora", None))


def set_fine_tuning(
    pretrained: Union[keras.Model, Sequence[keras.layers.Layer]],
    mode: str,
    blocks: Sequence[Sequence[keras.layers.Layer]],
    *,
    num_blocks: int = 1,
    lora_rank: int = 4,
) -> FineTuning:
    """Makes the last `num_blocks` of `blocks` trainable (or LoRA-trainable); freezes the rest.

    Args:
      pretrained: the pretrained part (a built Keras model, e.g. a keras.applications
        backbone), or the list of its layers when it is not a model of its own (e.g.
        parallel extractors inside one functional model); its layers' `trainable` flags
        are set here. Layers outside it (a new head) are not touched.
      mode: one of FINE_TUNE_MODES.
      blocks: the pretrained part's blocks, in the order the data meets them, each a list
        of its layers.
      num_blocks: how many of the last blocks train ("last_blocks" and "lora").
      lora_rank: the rank of the LoRA update ("lora"); Keras's default scale alpha = rank.

    Returns:
      A FineTuning saying what trains.

    Raises:
      ValueError: for an unknown mode, too many blocks, or (LoRA) blocks without a layer
        that takes LoRA.
    """
    mode = check_choice("fine_tune", mode, FINE_TUNE_MODES)
    num_blocks = check_positive_int("num_blocks", num_blocks)
    lora_rank = check_positive_int("lora_rank", lora_rank)
    if mode != HEAD and num_blocks > len(blocks):
        raise ValueError(f"num_blocks={num_blocks} but the pretrained part has only "
                         f"{len(blocks)} blocks; pass at most {len(blocks)}.")
    if isinstance(pretrained, keras.Model):
        pretrained.trainable = True  # reset every layer's flag, then freeze all but the chosen
        layers = list(pretrained.layers)
    else:
        layers = list(pretrained)
    for layer in layers:
        layer.trainable = False
    chosen = [] if mode == HEAD else [layer for block in blocks[-num_blocks:] for layer in block]
    if mode == LORA:
        trained = _enable_lora(chosen, lora_rank)
    else:
        trained = _unfreeze(chosen)
    # Each variable once, by its own flag: a nested layer's variables are also its parent's,
    # and a frozen parent (keras-hub's ViT encoder) may hold a child that trains.
    unique = {id(v): v for layer in layers for v in layer.weights if v.trainable}
    count = sum(int(v.numpy().size) for v in unique.values())
    return FineTuning(mode, tuple(layer.name for layer in trained), count)


def _unfreeze(layers: List[keras.layers.Layer]) -> List[keras.layers.Layer]:
    """Makes `layers` trainable, except BatchNormalization (kept in inference mode)."""
    trained = []
    for layer in layers:
        if isinstance(layer, keras.layers.BatchNormalization) or not layer.weights:
            continue
        layer.trainable = True
        trained.append(layer)
    return trained


# Keras's LoRA factors: lora_kernel_a/b (Dense, EinsumDense, ConvND), lora_embeddings_a/b
# (Embedding, whose table is its kernel).
_LORA_WEIGHTS = ("lora_kernel_", "lora_embeddings_")


def _enable_lora(layers: List[keras.layers.Layer], rank: int) -> List[keras.layers.Layer]:
    """Keras's LoRA on every layer of `layers` that takes it; only A and B train."""
    trained = []
    for layer in layers:
        if not supports_lora(layer):
            continue
        layer.trainable = True
        if not getattr(layer, "lora_enabled", False):
            layer.enable_lora(rank)  # freezes the kernel, adds trainable A and B
        for weight in layer.trainable_weights:
            if not weight.name.startswith(_LORA_WEIGHTS):
                weight.trainable = False  # LoRA trains A and B only (the bias stays too)
        trained.append(layer)
    if not trained:
        raise ValueError(
            "LoRA fine-tuning found no Dense, EinsumDense, Embedding or convolution layer in "
            "the chosen blocks; use fine_tune='last_blocks', or more blocks.")
    return trained
