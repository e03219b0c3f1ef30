"""Keras layers of two other private-training methods (no formal DP guarantee as trained here).

    tfdp.layers.ResidualPerturbation(gamma, *, noise="additive", active_at_inference=False)
        Gaussian noise on a ResNet's residual branch (Tao, Ling, Shi, Wang, arXiv 2408.05723).
    tfdp.layers.ActivationPrivatizer(clip_norm, noise_multiplier, *, clip_at_inference=False)
        per-example L2 clip + Gaussian noise on one layer's activations (NeuralDP,
        Knolle et al., arXiv 2107.14582, withdrawn by its authors).
    tfdp.layers.set_inference_noise(model, active), tfdp.layers.noisy_ensemble_probabilities(...)

What each can claim is in `tfdp.accounting.other_methods`.
"""

from tfdp.layers.activation_privatizer import ActivationPrivatizer, clip_per_example
from tfdp.layers.residual_perturbation import (
    NOISE_KINDS,
    ResidualPerturbation,
    noisy_ensemble_probabilities,
    set_inference_noise,
)

__all__ = [
    "ResidualPerturbation",
    "ActivationPrivatizer",
    "clip_per_example",
    "set_inference_noise",
    "noisy_ensemble_probabilities",
    "NOISE_KINDS",
]
