"""Privacy accounting: epsilon from the training ledger, noise calibration, Keras callback.

    compute_epsilon(num_examples, batch_size, noise_multiplier, *, epochs|steps, ...) -> PrivacyResult
    calibrate_noise_multiplier(target_epsilon, delta, num_examples, batch_size, epochs, ...) -> float
    PrivacyCallback(num_examples, delta=1e-5, *, target_epsilon=None, sampling="poisson")
    epsilon_from_ledger(optimizer, num_examples, *, delta, sampling, batch_size) -> PrivacyResult
    PrivacyRecord: the protocol of every run's record (PrivacyResult, OtherMethodPrivacy, NoPrivacy)
    format_epsilon(value) -> "inf" or 3 decimals
    banded_mf_epsilon / calibrate_banded_mf_noise / banded_mf_dp_event: banded DP-MF under
        cyclic Poisson sampling (tfdp.accounting.banded_mf, BANDED_MF_ASSUMPTIONS)

Gaussian noise is accounted with RDP (PLD on request), Laplace noise with PLD
(dp_accounting's RDP accountant refuses Poisson-sampled Laplace). Where a method
has no formal guarantee, epsilon is math.inf and the statement says so.
"""

from tfdp.accounting.calibration import calibrate_noise_multiplier
from tfdp.accounting.banded_mf import (
    BANDED_MF_ASSUMPTIONS,
    banded_mf_dp_event,
    banded_mf_epsilon,
    calibrate_banded_mf_noise,
)
from tfdp.accounting.callback import PrivacyCallback
from tfdp.accounting.epsilon import compute_epsilon
from tfdp.accounting.ledger import epsilon_from_ledger, read_ledger
from tfdp.accounting.privacy_result import PrivacyResult
from tfdp.accounting.record import NoPrivacy, PrivacyRecord, no_privacy
from tfdp.accounting.statement import format_epsilon
from tfdp.accounting.other_methods import (  # residual perturbation, NeuralDP: no guarantee
    OtherMethodPrivacy,
    neuraldp_privacy,
    residual_perturbation_privacy,
)

__all__ = [
    "compute_epsilon",
    "calibrate_noise_multiplier",
    "PrivacyCallback",
    "PrivacyResult",
    "PrivacyRecord",
    "NoPrivacy",
    "no_privacy",
    "epsilon_from_ledger",
    "read_ledger",
    "format_epsilon",
    "OtherMethodPrivacy",
    "residual_perturbation_privacy",
    "neuraldp_privacy",
    "BANDED_MF_ASSUMPTIONS",
    "banded_mf_dp_event",
    "banded_mf_epsilon",
    "calibrate_banded_mf_noise",
]
