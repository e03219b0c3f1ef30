"""A small ResNet without BatchNormalization (GroupNormalization, LayerNormalization or none).

`residual_layer` lets other methods act on every residual branch (e.g. residual
perturbation adds noise to F(x) before the skip connection is added).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import keras
import tensorflow as tf

from tfdp._validation import check_choice, check_positive_int

NORMALIZATIONS = ("group", "layer", "none")


def _normalization(kind: str, channels: int, groups: int, name: str):
    if kind == "group":
        # Fall back to fewer groups when the channels do not divide evenly.
        g = max(d for d in range(1, min(groups, channels) + 1) if channels % d == 0)
        return keras.layers.GroupNormalization(groups=g, name=name)
    if kind == "layer":
        return keras.layers.LayerNormalization(name=name)
    return None


def resnet(
    input_shape: Sequence[int] = (32, 32, 1),
    num_classes: int = 10,
    *,
    stage_filters: Sequence[int] = (16, 32, 64),
    blocks_per_stage: int = 1,
    normalization: str = "group",
    groups: int = 4,
    residual_layer: Optional[Callable[[int, str], keras.layers.Layer]] = None,
    name: str = "resnet",
) -> keras.Model:
    """A small pre-classifier ResNet: stem, `len(stage_filters)` stages, pooling, logits.

    Each block computes relu(shortcut(x) + F(x)) with F = conv3x3-norm-relu-conv3x3-norm;
    the first block of every stage after the first halves the resolution (stride 2)
    and its shortcut is a 1x1 strided convolution. With the defaults, 3 stages of 1
    block (a ResNet-8 in depth).

    Args:
      normalization: "group" (GroupNormalization), "layer" or "none"; never
        BatchNormalization, which mixes the examples of a batch.
      groups: number of groups for GroupNormalization (reduced to a divisor of
        the channel count when needed).
      residual_layer: optional factory `(channels, name) -> layer` applied to F(x)
        in every block before the addition.
    """
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 3:
        raise ValueError(
            f"resnet needs image inputs of shape (height, width, channels), got {shape}."
        )
    check_choice("normalization", normalization, NORMALIZATIONS)
    stage_filters = [check_positive_int("stage_filters", f) for f in stage_filters]
    blocks_per_stage = check_positive_int("blocks_per_stage", blocks_per_stage)
    groups = check_positive_int("groups", groups)

    inputs = keras.Input(shape=shape, name="image")
    x = keras.layers.Conv2D(stage_filters[0], 3, padding="same", name="stem_conv")(inputs)
    norm = _normalization(normalization, stage_filters[0], groups, "stem_norm")
    if norm is not None:
        x = norm(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    for stage, filters in enumerate(stage_filters):
        for block in range(blocks_per_stage):
            prefix = f"stage{stage}_block{block}"
            strides = 2 if stage > 0 and block == 0 else 1
            branch = keras.layers.Conv2D(filters, 3, strides=strides, padding="same",
                                            name=f"{prefix}_conv1")(x)
            norm = _normalization(normalization, filters, groups, f"{prefix}_norm1")
            if norm is not None:
                branch = norm(branch)
            branch = keras.layers.ReLU(name=f"{prefix}_relu1")(branch)
            branch = keras.layers.Conv2D(filters, 3, padding="same",
                                            name=f"{prefix}_conv2")(branch)
            norm = _normalization(normalization, filters, groups, f"{prefix}_norm2")
            if norm is not None:
                branch = norm(branch)
            if residual_layer is not None:
                branch = residual_layer(filters, f"{prefix}_residual")(branch)
            shortcut = x
            if strides != 1 or x.shape[-1] != filters:
                shortcut = keras.layers.Conv2D(filters, 1, strides=strides,
                                                  name=f"{prefix}_shortcut")(x)
            x = keras.layers.Add(name=f"{prefix}_add")([shortcut, branch])
            x = keras.layers.ReLU(name=f"{prefix}_out")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    logits = keras.layers.Dense(check_positive_int("num_classes", num_classes), name="logits")(x)
    return keras.Model(inputs, logits, name=name)
