"""Secret randomness for DP training: the noise and the sampling no seed can replay.

`secret` holds the per-run key, the OS-entropy seeds and the insecure, labelled
reproducible mode; `noise` draws Gaussian and Laplace noise from a stateless seed; `correlated.BandedNoise`
turns those draws into banded matrix-factorization noise C^{-1} z, step by step.
"""

from tfdp.randomness.secret import (
    INSECURE_NOTE,
    SecretKey,
    SecretRandomnessWarning,
    check_insecure_seed,
    derive_seed,
    os_entropy_seed,
    warn_seed_ignored,
)
from tfdp.randomness.noise import gaussian_noise, laplace_noise, split_seeds
from tfdp.randomness.correlated import BandedNoise
from tfdp.randomness import discrete, grid

__all__ = [
    "INSECURE_NOTE",
    "SecretKey",
    "SecretRandomnessWarning",
    "check_insecure_seed",
    "derive_seed",
    "os_entropy_seed",
    "warn_seed_ignored",
    "gaussian_noise",
    "laplace_noise",
    "split_seeds",
    "BandedNoise",
    "discrete",
    "grid",
]
