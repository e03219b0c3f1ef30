"""tfdp: differentially private training of TensorFlow/Keras models.

Layers of the package, one job each:
    tfdp.queries     DPQuery subclasses (Laplace noise, randomized noise schedule)
    tfdp.optimizers  Keras optimizers that run any sum DPQuery
    tfdp.training    the fast per-example-gradient train step
    tfdp.accounting  epsilon from the training ledger, noise calibration, Keras callback
    tfdp.attacks     membership inference, utility metrics, audits
    tfdp.data        data sets and Poisson-sampled input pipelines
    tfdp.export      SavedModel export with the privacy record
    tfdp.layers      residual perturbation and NeuralDP layers (no formal guarantee)
"""

from tfdp import data
from tfdp import queries
from tfdp import attacks
from tfdp import layers
from tfdp import export
from tfdp.accounting import (
    PrivacyCallback,
    PrivacyResult,
    calibrate_noise_multiplier,
    compute_epsilon,
)
from tfdp.optimizers import (
    DPKerasAdagradOptimizer,
    DPKerasAdamOptimizer,
    DPKerasSGDOptimizer,
    make_dp_keras_optimizer_class,
)
from tfdp.training import make_private

__version__ = "0.1.0"

__all__ = [
    "data",
    "queries",
    "attacks",
    "layers",
    "export",
    "DPKerasSGDOptimizer",
    "DPKerasAdamOptimizer",
    "DPKerasAdagradOptimizer",
    "make_dp_keras_optimizer_class",
    "make_private",
    "compute_epsilon",
    "calibrate_noise_multiplier",
    "PrivacyCallback",
    "PrivacyResult",
]
