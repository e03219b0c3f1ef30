"""Train only what is trainable: a model's frozen prefix computed once, not at every step.

A model whose first layers are frozen (a pretrained feature extractor under a trainable
head, as `tfdp.models.pretrained_linear`) maps every example to the same features at
every step. Training the head on those features, computed once per data set, is the same
training: the per-example gradients of the trainable variables, hence their clipping and
the noise, are exactly those of the full model, because frozen layers have no gradient
and the features do not depend on the step. Only the repeated forward pass through the
extractor is saved (on two cores, most of a step's time for the digits prior).

    split = split_frozen_prefix(model)      # None when there is nothing to save
    head_data = split.features_of(x)        # once per data set
    split.head                              # trains; its layers are the model's own

The prefix must be deterministic in training (no dropout, noise or random augmentation
layer): a prefix whose training-mode output differs from its inference-mode output would
be a different computation once cached, so such a model is not split.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import keras
import numpy as np

# Features are computed in chunks of this many examples (bounded memory on large data).
FEATURE_BATCH = 1024


@dataclasses.dataclass(frozen=True)
class FrozenSplit:
    """A model cut where its trainable part begins: `head(features(x)) == model(x)`.

    `head` shares its layers (and so its variables) with the model: training it trains
    the model.
    """

    features: keras.Model
    head: keras.Model

    def features_of(self, x: np.ndarray) -> np.ndarray:
        """The frozen prefix's output for every example of `x` (inference mode)."""
        if len(x) == 0:
            return np.zeros((0,) + tuple(self.features.output.shape[1:]), np.float32)
        return np.concatenate([np.asarray(self.features(x[i:i + FEATURE_BATCH], training=False))
                               for i in range(0, len(x), FEATURE_BATCH)])


def split_frozen_prefix(model: keras.Model, sample: Optional[np.ndarray] = None
                        ) -> Optional[FrozenSplit]:
    """The model split after its frozen prefix, or None when it cannot or need not be.

    The cut is the input of the first layer (in the functional graph's order) with
    trainable weights. None when: the model is not a single-input, single-output
    functional model; no layer before the cut holds weights (nothing worth caching);
    some trainable layer or the output needs a tensor from before the cut other than the
    cut itself; or, given `sample` inputs, the prefix is not deterministic in training.
    """
    try:
        inputs, outputs = model.inputs, model.outputs
    except AttributeError:
        return None  # a subclassed model: no graph to cut
    if len(inputs or []) != 1 or len(outputs or []) != 1:
        return None
    layers = model.layers
    first = next((i for i, layer in enumerate(layers) if layer.trainable_weights), None)
    if first is None or not any(layer.weights for layer in layers[:first]):
        return None
    trainable = layers[first]
    if len(getattr(trainable, "_inbound_nodes", [])) != 1:
        return None  # a shared layer: its input is not one tensor
    cut = trainable.input
    if not isinstance(cut, keras.KerasTensor):
        return None
    try:
        head = keras.Model(cut, model.output, name=f"{model.name}_head")
        features = keras.Model(model.input, cut, name=f"{model.name}_frozen_features")
    except ValueError:
        return None  # the head needs more than the cut (graph not connected through it)
    if len(head.trainable_weights) != len(model.trainable_weights):
        return None
    if any(layer.trainable_weights for layer in features.layers):
        return None
    if sample is not None and len(sample):
        x = np.asarray(sample[:8])
        if not np.array_equal(np.asarray(features(x, training=True)),
                              np.asarray(features(x, training=False))):
            return None  # dropout, noise or augmentation in the prefix: not cacheable
    return FrozenSplit(features=features, head=head)
