"""Residual perturbation: Gaussian noise on a ResNet's residual branch (Tao, Ling, Shi, Wang).

A ResNet block x_{l+1} = x_l + F(x_l) read as one Euler step of the stochastic
differential equation dx = F(x, W) dt + gamma dB becomes

    x_{l+1} = x_l + F(x_l) + gamma * n_l,      n_l ~ N(0, I) drawn afresh for every example

("additive" noise; arXiv 2408.05723, "Deep Learning with Data Privacy via Residual
Perturbation"). Put this layer on the branch output F(x_l), before the skip connection
is added (`models.resnet`'s `residual_layer` hook does exactly that).

The paper analyses two noise strategies. The additive SDE form above is the one tfdp
follows; `noise="multiplicative"` (noise proportional to the activation, a
state-dependent diffusion) is offered as a variant and is NOT verified to be the
paper's second strategy as the paper states it.

The noise perturbs activations only. It does not clip or noise gradients, so it gives
no differential-privacy guarantee by itself: see
`tfdp.accounting.other_methods.residual_perturbation_privacy` for what can and cannot
be said about a training run.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import keras
import numpy as np
import tensorflow as tf

from tfdp._validation import check_choice, check_non_negative, check_positive_int

NOISE_KINDS = ("additive", "multiplicative")


@keras.saving.register_keras_serializable(package="tfdp")
class ResidualPerturbation(keras.layers.Layer):
    """Adds Gaussian noise of scale `gamma` to a residual branch, in training only unless asked.

    Args:
      gamma: noise scale, >= 0 (0 turns the layer into the identity).
      noise: "additive": output = F + gamma * n, the SDE dx = F dt + gamma dB
        (noise independent of the activations). "multiplicative": output =
        F + gamma * F * n (elementwise), noise proportional to the activation the
        layer receives, i.e. a state-dependent diffusion term.
      active_at_inference: False (default): noise only when Keras runs the layer in
        training mode (`fit`, or `training=True`), identity at inference. True:
        noise at inference too, for noisy ensembles that average several
        stochastic forward passes (see `noisy_ensemble_probabilities`).
      seed: optional seed of the noise.

    Input and output: any shape; the noise has the input's shape, so every example
    and every coordinate gets its own draw.
    """

    def __init__(
        self,
        gamma: float,
        *,
        noise: str = "additive",
        active_at_inference: bool = False,
        seed: Optional[int] = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.gamma = check_non_negative("gamma", gamma)
        self.noise = check_choice("noise", noise, NOISE_KINDS)
        if not isinstance(active_at_inference, (bool, np.bool_)):
            raise ValueError(
                f"`active_at_inference` must be True or False, got {active_at_inference!r}."
            )
        self.active_at_inference = bool(active_at_inference)
        self.seed = seed
        self.supports_masking = True

    def _noised(self, inputs: tf.Tensor) -> tf.Tensor:
        draw = keras.random.normal(
            tf.shape(inputs), dtype=inputs.dtype, seed=self.seed_generator)
        scale = tf.cast(self.gamma, inputs.dtype)
        if self.noise == "multiplicative":
            return inputs + scale * inputs * draw
        return inputs + scale * draw

    def call(self, inputs: tf.Tensor, training: Optional[bool] = None) -> tf.Tensor:
        """F + noise in training (and at inference when `active_at_inference`), else F."""
        inputs = tf.convert_to_tensor(inputs)
        if self.gamma == 0.0:
            return inputs
        if self.active_at_inference:
            return self._noised(inputs)
        return self._noised(inputs) if training else inputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config.update(gamma=self.gamma, noise=self.noise,
                      active_at_inference=self.active_at_inference, seed=self.seed)
        return config


def _perturbation_layers(model: keras.Model):
    return [m for m in model._flatten_layers(include_self=False)  # pylint: disable=protected-access
            if isinstance(m, ResidualPerturbation)]


def set_inference_noise(model: keras.Model, active: bool) -> int:
    """Switches the inference-time noise of every `ResidualPerturbation` layer of `model`.

    Keras caches `predict`/`evaluate` graphs, so they are reset to pick up the change.
    Returns the number of layers switched (0 when the model has none).
    """
    if not isinstance(active, (bool, np.bool_)):
        raise ValueError(f"`active` must be True or False, got {active!r}.")
    layers = _perturbation_layers(model)
    for layer in layers:
        layer.active_at_inference = bool(active)
    # The cached functions were traced with the old Python flag.
    model.predict_function = None
    model.test_function = None
    return len(layers)


def noisy_ensemble_probabilities(
    model: keras.Model, x: Any, *, num_samples: int = 8, batch_size: int = 256
) -> np.ndarray:
    """Class probabilities averaged over `num_samples` noisy forward passes.

    The residual noise is switched on for these passes and restored afterwards.
    The model must output logits (as every `models/` builder does); a model with
    one output is read as a binary logit.
    """
    num_samples = check_positive_int("num_samples", num_samples)
    batch_size = check_positive_int("batch_size", batch_size)
    layers = _perturbation_layers(model)
    if not layers:
        raise ValueError("The model has no ResidualPerturbation layer: its predictions carry no "
                         "noise to average; use model.predict.")
    before = [layer.active_at_inference for layer in layers]
    set_inference_noise(model, True)
    try:
        total = None
        for _ in range(num_samples):
            logits = np.asarray(model.predict(x, batch_size=batch_size, verbose=0))
            if logits.ndim == 2 and logits.shape[1] == 1:
                p = 1.0 / (1.0 + np.exp(-logits[:, 0]))
                probs = np.stack([1.0 - p, p], axis=1)
            else:
                probs = tf.nn.softmax(logits, axis=-1).numpy()
            total = probs if total is None else total + probs
    finally:
        for layer, flag in zip(layers, before):
            layer.active_at_inference = flag
        model.predict_function = None
        model.test_function = None
    return total / num_samples
