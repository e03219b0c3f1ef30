"""The NeuralDP model: a feature extractor, one privatized layer, then the classifier head.

NeuralDP (Knolle et al., arXiv 2107.14582, withdrawn by its authors) privatizes the
activations of one layer. Here that layer sits after the feature extractor and
before the classifier head: images go through convolution blocks, vectors through
dense layers; the flattened features are clipped per example and noised
(`tfdp.layers.ActivationPrivatizer`), and a small dense head maps them to logits.
"""

from __future__ import annotations

from typing import Optional, Sequence

import keras
import tensorflow as tf

from tfdp._validation import check_positive_int
from tfdp.layers import ActivationPrivatizer

PRIVATIZER_NAME = "activation_privatizer"
PLACEMENT = ("the flattened output of the feature extractor (after the convolution blocks "
             "or the dense feature layers, before the classifier head)")


def neuraldp_model(
    input_shape: Sequence[int] = (8, 8, 1),
    num_classes: int = 10,
    *,
    clip_norm: float = 1.0,
    noise_multiplier: float = 1.0,
    filters: Sequence[int] = (16, 32),
    feature_units: Sequence[int] = (64,),
    head_units: int = 32,
    clip_at_inference: bool = False,
    seed: Optional[int] = None,
    name: str = "neuraldp",
) -> keras.Model:
    """Feature extractor, `ActivationPrivatizer(clip_norm, noise_multiplier)`, dense head, logits.

    Image inputs (height, width, channels): one block per entry of `filters`
    (3x3 convolution with ReLU, 2x2 max pooling), then Flatten. Vector inputs:
    one ReLU dense layer per entry of `feature_units`. Then the privatizer (layer
    name "activation_privatizer"), Dense(head_units, ReLU) and the logits layer.
    """
    shape = tuple(int(d) for d in input_shape)
    inputs = keras.Input(shape=shape, name="features" if len(shape) == 1 else "image")
    x = inputs
    if len(shape) == 3:
        filters = [check_positive_int("filters", f) for f in filters]
        if min(shape[:2]) < 2 ** len(filters):
            raise ValueError(
                f"neuraldp_model with {len(filters)} pooling blocks needs images of at least "
                f"{2 ** len(filters)}x{2 ** len(filters)} pixels, got {shape[0]}x{shape[1]}; "
                "use fewer `filters`.")
        for i, width in enumerate(filters):
            x = keras.layers.Conv2D(width, 3, padding="same", activation="relu",
                                       name=f"conv{i}")(x)
            x = keras.layers.MaxPool2D(2, name=f"pool{i}")(x)
        x = keras.layers.Flatten(name="flatten")(x)
    elif len(shape) == 1:
        for i, units in enumerate(feature_units):
            x = keras.layers.Dense(check_positive_int("feature_units", units),
                                      activation="relu", name=f"feature{i}")(x)
    else:
        raise ValueError(f"neuraldp_model takes images (height, width, channels) or vectors "
                         f"(features,), got input shape {shape}.")
    x = ActivationPrivatizer(clip_norm, noise_multiplier, clip_at_inference=clip_at_inference,
                             seed=seed, name=PRIVATIZER_NAME)(x)
    x = keras.layers.Dense(check_positive_int("head_units", head_units), activation="relu",
                              name="head")(x)
    logits = keras.layers.Dense(check_positive_int("num_classes", num_classes),
                                   name="logits")(x)
    return keras.Model(inputs, logits, name=name)
