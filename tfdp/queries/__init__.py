"""DPQuery subclasses on TF Privacy's `dp_query`: Laplace noise and the randomized noise schedule."""

from tfdp.queries.describe import describe_query
from tfdp.queries.factory import MECHANISMS, NOISE_SCHEDULES, make_dp_sum_query
from tfdp.queries.laplace_sum_query import LaplaceSumQuery, clip_by_global_l1_norm
from tfdp.queries.randomized_noise_query import (
    OUTCOME_DROPPED,
    OUTCOME_NOISY,
    OUTCOME_RELEASED,
    RandomizedNoiseQuery,
)
from tfdp.queries.serialization import query_from_config, query_to_config

__all__ = [
    "LaplaceSumQuery",
    "RandomizedNoiseQuery",
    "make_dp_sum_query",
    "describe_query",
    "query_to_config",
    "query_from_config",
    "clip_by_global_l1_norm",
    "MECHANISMS",
    "NOISE_SCHEDULES",
    "OUTCOME_NOISY",
    "OUTCOME_RELEASED",
    "OUTCOME_DROPPED",
]
