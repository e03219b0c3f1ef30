"""The DP optimizer (a wrapper around any Keras 3 optimizer) that runs a sum DPQuery each step."""

from tfdp.optimizers.dp_optimizer import (
    DPKerasAdagradOptimizer,
    DPKerasAdamOptimizer,
    DPKerasSGDOptimizer,
    DPOptimizer,
    make_dp_keras_optimizer_class,
)
from tfdp.optimizers.per_example_loss import per_unit_losses

__all__ = [
    "DPOptimizer",
    "DPKerasSGDOptimizer",
    "DPKerasAdamOptimizer",
    "DPKerasAdagradOptimizer",
    "make_dp_keras_optimizer_class",
    "per_unit_losses",
]
