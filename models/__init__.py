"""Model builders for private training; every model outputs logits and has no BatchNormalization.

    build_model(name, input_shape, num_classes, **kw)   one entry point
    pneumonia_cnn, tutorial_cnn, digits_cnn, mlp, resnet
"""

from tfdp.models.cnn import digits_cnn, pneumonia_cnn, tutorial_cnn
from tfdp.models.mlp import linear, mlp, normalized_linear
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
    "resnet",
]
