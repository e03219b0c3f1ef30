"""The ResNet of residual perturbation: `models.resnet` with noise on every residual branch."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import keras
import tensorflow as tf

from tfdp.models.resnet import resnet
from tfdp.layers import ResidualPerturbation


def residual_perturbation_resnet(
    input_shape: Sequence[int] = (32, 32, 1),
    num_classes: int = 10,
    *,
    gamma: float = 0.5,
    noise: str = "additive",
    inference_noise: bool = False,
    seed: Optional[int] = None,
    name: str = "residual_perturbation_resnet",
    **resnet_kwargs: Any,
) -> keras.Model:
    """A ResNet whose every block adds `tfdp.layers.ResidualPerturbation(gamma)` noise to F(x).

    Block l computes relu(shortcut(x_l) + F(x_l) + gamma * n_l) in training (the
    paper's x_{l+1} = x_l + F(x_l) + gamma * N(0, I), Tao, Ling, Shi, Wang, arXiv
    2408.05723), with the architecture of `models.resnet` (ResNet-8 depth with the
    defaults, no BatchNormalization).

    Args:
      gamma: noise scale on every residual branch.
      noise: "additive" or "multiplicative" (see `ResidualPerturbation`).
      inference_noise: keep the noise on at inference (for noisy ensembles); off by
        default. `tfdp.layers.set_inference_noise` switches it later.
      seed: optional seed; block i's layer gets seed + i.
      resnet_kwargs: passed to `models.resnet` (stage_filters, blocks_per_stage,
        normalization, groups).
    """
    counter = [0]

    def perturbation(channels: int, layer_name: str) -> keras.layers.Layer:
        del channels  # the noise has the branch's shape whatever its width
        layer_seed = None if seed is None else seed + counter[0]
        counter[0] += 1
        return ResidualPerturbation(gamma, noise=noise, active_at_inference=inference_noise,
                                    seed=layer_seed, name=layer_name)

    return resnet(input_shape, num_classes, residual_layer=perturbation, name=name,
                  **resnet_kwargs)
