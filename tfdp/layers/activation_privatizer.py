"""NeuralDP's activation privatization: per-example L2 clip and Gaussian noise on one layer.

Knolle et al., "NeuralDP: Differentially private neural networks by design",
arXiv 2107.14582 (a preprint its authors withdrew). In training, every example's
activation vector a (all non-batch axes together) becomes

    a * min(1, C / ||a||_2) + N(0, (sigma * C)^2 I)

with C = `clip_norm` and sigma = `noise_multiplier`. The preprint argues that the
layers after this one are post-processing of a Gaussian mechanism. That argument
does not cover the layers before the privatized one (they see the raw examples and
are trained with unclipped, un-noised gradients) nor the labels; see
`tfdp.accounting.other_methods.neuraldp_privacy`.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import keras
import numpy as np
import tensorflow as tf

from tfdp._validation import check_non_negative, check_positive


def clip_per_example(activations: tf.Tensor, clip_norm: float) -> tf.Tensor:
    """Scales each example (row along axis 0) to L2 norm at most `clip_norm`, over all other axes."""
    activations = tf.convert_to_tensor(activations)
    axes = list(range(1, activations.shape.rank))
    if not axes:
        raise ValueError("Activations need a batch axis and at least one feature axis, got a "
                         f"tensor of rank {activations.shape.rank}.")
    return tf.clip_by_norm(activations, tf.cast(clip_norm, activations.dtype), axes=axes)


@keras.saving.register_keras_serializable(package="tfdp")
class ActivationPrivatizer(keras.layers.Layer):
    """Per-example L2 clipping of the input activations plus Gaussian noise, in training.

    Args:
      clip_norm: C > 0, the largest L2 norm one example's activations (all
        non-batch axes together) may have after clipping.
      noise_multiplier: sigma >= 0; the noise std is sigma * C on every coordinate.
      clip_at_inference: False (default): identity at inference, the layer only acts
        in training mode. True: clip (without noise) at inference too, so inference
        sees activations on the same scale as training did.
      seed: optional seed of the noise.
    """

    def __init__(
        self,
        clip_norm: float,
        noise_multiplier: float,
        *,
        clip_at_inference: bool = False,
        seed: Optional[int] = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.clip_norm = check_positive("clip_norm", clip_norm)
        self.noise_multiplier = check_non_negative("noise_multiplier", noise_multiplier)
        if not isinstance(clip_at_inference, (bool, np.bool_)):
            raise ValueError(
                f"`clip_at_inference` must be True or False, got {clip_at_inference!r}.")
        self.clip_at_inference = bool(clip_at_inference)
        self.seed = seed

    @property
    def noise_stddev(self) -> float:
        """Standard deviation of the noise on each coordinate: noise_multiplier * clip_norm."""
        return self.noise_multiplier * self.clip_norm

    def _privatized(self, inputs: tf.Tensor) -> tf.Tensor:
        clipped = clip_per_example(inputs, self.clip_norm)
        if self.noise_multiplier == 0.0:
            return clipped
        return clipped + keras.random.normal(
            tf.shape(inputs), stddev=self.noise_stddev, dtype=inputs.dtype, seed=self.seed_generator)

    def call(self, inputs: tf.Tensor, training: Optional[bool] = None) -> tf.Tensor:
        """Clip + noise in training; identity (or clip only) at inference."""
        inputs = tf.convert_to_tensor(inputs)
        at_inference = (clip_per_example(inputs, self.clip_norm) if self.clip_at_inference
                        else inputs)
        return self._privatized(inputs) if training else at_inference

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config.update(clip_norm=self.clip_norm, noise_multiplier=self.noise_multiplier,
                      clip_at_inference=self.clip_at_inference, seed=self.seed)
        return config
