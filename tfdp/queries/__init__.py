"""DPQuery subclasses on TF Privacy's `dp_query`: Gaussian (readable), Laplace, randomized schedule.

Building, describing and serializing queries from settings is the job of `tfdp.mechanisms`,
the layer above this one.
"""

from tfdp.queries.gaussian_sum_query import GaussianSumQuery
from tfdp.queries.banded_mf_sum_query import BandedMFSumQuery
from tfdp.queries.laplace_sum_query import LaplaceSumQuery, clip_by_global_l1_norm
from tfdp.queries.randomized_noise_query import (
    ON_SKIP_CHOICES,
    OUTCOME_DROPPED,
    OUTCOME_NOISY,
    OUTCOME_RELEASED,
    RandomizedNoiseQuery,
)

__all__ = [
    "GaussianSumQuery",
    "BandedMFSumQuery",
    "LaplaceSumQuery",
    "RandomizedNoiseQuery",
    "clip_by_global_l1_norm",
    "OUTCOME_NOISY",
    "OUTCOME_RELEASED",
    "OUTCOME_DROPPED",
    "ON_SKIP_CHOICES",
]

