"""Builds the DPQuery for a (mechanism, noise schedule) pair from plain arguments."""

from __future__ import annotations

from typing import Optional

from tfdp._tf_privacy import dp_query, gaussian_query

from tfdp._validation import check_choice, check_non_negative, check_positive, check_probability
from tfdp.queries.laplace_sum_query import LaplaceSumQuery
from tfdp.queries.randomized_noise_query import ON_SKIP_CHOICES, RandomizedNoiseQuery

MECHANISMS = ("gaussian", "laplace")
NOISE_SCHEDULES = ("regular", "random")


def make_dp_sum_query(
    mechanism: str = "gaussian",
    noise_schedule: str = "regular",
    *,
    noise_multiplier: Optional[float],
    l2_norm_clip: Optional[float] = None,
    l1_norm_clip: Optional[float] = None,
    noise_probability: float = 1.0,
    on_skip: str = "release",
    seed: Optional[int] = None,
) -> dp_query.SumAggregationDPQuery:
    """Returns the sum query for one of the four noise methods of the dynamic-DP paper.

    * gaussian + regular: TF Privacy's `GaussianSumQuery` (L2 clip, stddev =
      noise_multiplier * l2_norm_clip) every step (RegN-DP-SGD).
    * laplace + regular: `LaplaceSumQuery` (L1 clip, scale = noise_multiplier *
      l1_norm_clip) every step.
    * either + random: the same query wrapped in `RandomizedNoiseQuery`, noise on a
      step with probability `noise_probability` (RanN-DP-SGD).

    Raises ValueError naming the argument when a value is out of range or the clip
    does not match the mechanism (Laplace noise is DP only with an L1 clip).
    """
    check_choice("mechanism", mechanism, MECHANISMS)
    check_choice("noise_schedule", noise_schedule, NOISE_SCHEDULES)
    check_choice("on_skip", on_skip, ON_SKIP_CHOICES)
    noise_probability = check_probability("noise_probability", noise_probability)
    if noise_multiplier is None:
        raise ValueError("`noise_multiplier` is required: a number >= 0 (noise std / clip).")
    noise_multiplier = check_non_negative("noise_multiplier", noise_multiplier)
    if noise_schedule == "regular" and noise_probability != 1.0:
        raise ValueError(
            "`noise_probability` only applies to noise_schedule='random'; with "
            f"noise_schedule='regular' every step is noisy, so leave it at 1.0 (got {noise_probability})."
        )

    if mechanism == "gaussian":
        if l1_norm_clip is not None:
            raise ValueError(
                "`l1_norm_clip` is for mechanism='laplace'; the Gaussian mechanism clips the "
                "L2 norm: pass `l2_norm_clip` instead."
            )
        if l2_norm_clip is None:
            raise ValueError("mechanism='gaussian' needs `l2_norm_clip`, a number > 0.")
        clip = check_positive("l2_norm_clip", l2_norm_clip)
        query = gaussian_query.GaussianSumQuery(l2_norm_clip=clip, stddev=noise_multiplier * clip)
    else:
        if l2_norm_clip is not None:
            raise ValueError(
                "`l2_norm_clip` cannot be used with mechanism='laplace': Laplace noise is "
                "differentially private only for L1 sensitivity. Pass `l1_norm_clip` instead."
            )
        if l1_norm_clip is None:
            raise ValueError("mechanism='laplace' needs `l1_norm_clip`, a number > 0.")
        query = LaplaceSumQuery(l1_norm_clip=l1_norm_clip, noise_multiplier=noise_multiplier)

    if noise_schedule == "random":
        query = RandomizedNoiseQuery(query, noise_probability, on_skip=on_skip, seed=seed)
    return query
