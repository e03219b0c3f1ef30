"""Keras optimizer subclasses that run any sum DPQuery (clipping and noise) on every step."""

from tfdp.optimizers.dp_optimizer import (
    DPKerasAdagradOptimizer,
    DPKerasAdamOptimizer,
    DPKerasSGDOptimizer,
    make_dp_keras_optimizer_class,
)
from tfdp.optimizers.per_example_loss import per_unit_losses

__all__ = [
    "DPKerasSGDOptimizer",
    "DPKerasAdamOptimizer",
    "DPKerasAdagradOptimizer",
    "make_dp_keras_optimizer_class",
    "per_unit_losses",
]
