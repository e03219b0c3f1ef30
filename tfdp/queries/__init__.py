"""DPQuery subclasses on TF Privacy's `dp_query`: Gaussian (readable), Laplace, randomized schedule.

Building, describing and serializing queries from settings is `tfdp.mechanisms`'s job;
its functions are also reachable here under their old names.
"""

from tfdp.queries.gaussian_sum_query import GaussianSumQuery
from tfdp.queries.laplace_sum_query import LaplaceSumQuery, clip_by_global_l1_norm
from tfdp.queries.randomized_noise_query import (
    ON_SKIP_CHOICES,
    OUTCOME_DROPPED,
    OUTCOME_NOISY,
    OUTCOME_RELEASED,
    RandomizedNoiseQuery,
)

# Names that live in tfdp.mechanisms (a layer above this one), resolved on first use so that
# importing either package first works.
_FROM_MECHANISMS = ("make_dp_sum_query", "describe_query", "query_to_config", "query_from_config")

__all__ = [
    "GaussianSumQuery",
    "LaplaceSumQuery",
    "RandomizedNoiseQuery",
    "clip_by_global_l1_norm",
    "OUTCOME_NOISY",
    "OUTCOME_RELEASED",
    "OUTCOME_DROPPED",
    "ON_SKIP_CHOICES",
    *_FROM_MECHANISMS,
]


def __getattr__(name):
    if name in _FROM_MECHANISMS:
        import tfdp.mechanisms  # pylint: disable=import-outside-toplevel

        return getattr(tfdp.mechanisms, name)
    raise AttributeError(f"module 'tfdp.queries' has no attribute {name!r}")
