"""Noise mechanisms, one object each, and the names of every privacy setting.

    get_mechanism("gaussian")   -> GaussianMechanism: clip kind, query, dp_event, accountant, words
    mechanism_names()           -> names of the registered noise mechanisms: gaussian, laplace,
                                   banded_mf (correlated noise, needs bands)
    register_mechanism(cls)     -> class decorator adding a NoiseMechanism subclass
    RANDOM_SCHEDULE             -> the random noise schedule, a wrapper of any mechanism's query
    make_dp_sum_query / describe_query / query_to_config / query_from_config / clip_norm_kind
    NoiseSchedule, OnSkip, Sampling, NO_NOISE, values(enum)   (from tfdp.names)
    banded_mf                   -> banded Toeplitz strategies for DP matrix factorization
                                   (coefficients, optimizer, sensitivity, recurrence reference)

A new mechanism is a module with a `NoiseMechanism` subclass and `@register_mechanism`;
the factory, description, serialization, fast path, accountant, callback and the run
find it through the registry.
"""

from tfdp.names import NO_NOISE, Accountant, NoiseSchedule, OnSkip, Sampling, values
from tfdp.mechanisms.base import NoiseMechanism
from tfdp.mechanisms.registry import (
    get_mechanism,
    mechanism_names,
    mechanism_of_query,
    register_mechanism,
    unregister_mechanism,
)
from tfdp.mechanisms.gaussian import GaussianMechanism  # registers "gaussian"
from tfdp.mechanisms.laplace import LaplaceMechanism  # registers "laplace"
from tfdp.mechanisms.banded_mf_mechanism import BandedMFMechanism  # registers "banded_mf"
from tfdp.mechanisms.no_noise import NO_NOISE_MECHANISM, NoNoise
from tfdp.mechanisms.random_schedule import RANDOM_SCHEDULE, RandomSchedule
from tfdp.mechanisms import banded_mf
from tfdp.mechanisms.banded_mf import (
    banded_sensitivity,
    banded_toeplitz_coefficients,
    optimize_banded_toeplitz,
)
from tfdp.mechanisms.queries import (
    clip_norm_kind,
    describe_query,
    make_dp_sum_query,
    query_from_config,
    query_to_config,
)

__all__ = [
    "NoiseMechanism",
    "GaussianMechanism",
    "LaplaceMechanism",
    "BandedMFMechanism",
    "NoNoise",
    "NO_NOISE_MECHANISM",
    "RandomSchedule",
    "RANDOM_SCHEDULE",
    "get_mechanism",
    "mechanism_names",
    "mechanism_of_query",
    "register_mechanism",
    "unregister_mechanism",
    "make_dp_sum_query",
    "describe_query",
    "query_to_config",
    "query_from_config",
    "clip_norm_kind",
    "NO_NOISE",
    "Accountant",
    "NoiseSchedule",
    "OnSkip",
    "Sampling",
    "values",
    "banded_mf",
    "banded_toeplitz_coefficients",
    "optimize_banded_toeplitz",
    "banded_sensitivity",
]
