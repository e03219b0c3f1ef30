"""tfdp: differentially private training of TensorFlow/Keras models.

Layers of the package, one job each:
    tfdp.mechanisms  one object per noise mechanism (Gaussian, Laplace; the random schedule
                     wraps either) and the names of every privacy setting
    tfdp.randomness  the randomness the guarantee keeps secret (a per-run key from OS entropy,
                     never stored) and floating-point-safe noise on a grid
    tfdp.queries     DPQuery subclasses (Gaussian, Laplace noise, randomized noise schedule)
    tfdp.optimizers  Keras optimizers that run any sum DPQuery
    tfdp.training    the fast per-example-gradient train step
    tfdp.accounting  epsilon from the training ledger, noise calibration, Keras callback
    tfdp.plan        the privacy plan: a run's data size, unit, batch size, steps, noise and
                     budget stated once; it gives the sampler, optimizer and callback
    tfdp.attacks     membership inference, utility metrics, audits
    tfdp.data        data sets and Poisson-sampled input pipelines
    tfdp.export      SavedModel export with the privacy record
    tfdp.layers      residual perturbation and NeuralDP layers (no formal guarantee)
    tfdp.models      model builders (the paper's CNN, tutorial CNN, MLP, ResNets)
    tfdp.run         one training run as a call (train, account, attack, export) and the
                     comparison of every method; tfdp.scripts are thin absl entry points
"""

from tfdp import randomness
from tfdp import data
from tfdp import mechanisms
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
    DPOptimizer,
    make_dp_keras_optimizer_class,
)
from tfdp.training import make_private
from tfdp.plan import PrivacyPlan
from tfdp import models  # after the layers: the builders use them
from tfdp import run  # last: a run uses every layer above


def _installed_version() -> str:
    """The version pyproject.toml declares, read from the installed metadata (one source)."""
    from importlib import metadata  # pylint: disable=import-outside-toplevel

    try:
        return metadata.version("tfdp")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


__version__ = _installed_version()

__all__ = [
    "data",
    "mechanisms",
    "models",
    "run",
    "queries",
    "randomness",
    "attacks",
    "layers",
    "export",
    "DPKerasSGDOptimizer",
    "DPKerasAdamOptimizer",
    "DPKerasAdagradOptimizer",
    "make_dp_keras_optimizer_class",
    "DPOptimizer",
    "PrivacyPlan",
    "make_private",
    "compute_epsilon",
    "calibrate_noise_multiplier",
    "PrivacyCallback",
    "PrivacyResult",
]
