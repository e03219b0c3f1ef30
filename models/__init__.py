"""Model builders for private training; every model outputs logits; BatchNormalization only frozen.

    build_model(name, input_shape, num_classes, **kw)   one entry point
    pneumonia_cnn, tutorial_cnn, digits_cnn, mlp, resnet
    pretrained_linear     a DP head on features pretrained on public synthetic digits
    prior_linear          that prior for 8x8x1 digits, normalized_linear for other inputs
    backbone_classifier   a keras.applications backbone (BatchNormalization frozen) under a
                          DP head: head-only, last-block or LoRA fine-tuning
"""

from tfdp.models.backbones import BACKBONES, backbone_blocks, backbone_classifier
from tfdp.models.cnn import digits_cnn, pneumonia_cnn, tutorial_cnn
from tfdp.models.mlp import linear, mlp, normalized_linear
from tfdp.models.pretrained import (
    has_public_prior,
    pretrained_linear,
    prior_linear,
    public_digits_weights,
)
from tfdp.models.registry import available_models, build_model, default_model_name, register_model
from tfdp.models.resnet import resnet

__all__ = [
    "build_model",
    "available_models",
    "default_model_name",
    "register_model",
    "pneumonia_cnn",
    "tutorial_cnn",
    "digits_cnn",
    "mlp",
    "linear",
    "normalized_linear",
    "pretrained_linear",
    "prior_linear",
    "has_public_prior",
    "public_digits_weights",
    "resnet",
    "BACKBONES",
    "backbone_blocks",
    "backbone_classifier",
]
