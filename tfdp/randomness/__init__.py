"""Secret randomness for DP training: the noise and the sampling no seed can replay.

`secret` holds the per-run key, the OS-entropy seeds and the insecure, labelled
reproducible mode; `noise` draws Gaussian and Laplace noise from a stateless seed.
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
    "discrete",
    "grid",
]
