"""Reads the privacy-relevant settings back out of a sum query, for accounting and records."""

from __future__ import annotations

from typing import Any, Dict

from tfdp._tf_privacy import dp_query, gaussian_query, no_privacy_query

from tfdp.queries.laplace_sum_query import LaplaceSumQuery
from tfdp.queries.randomized_noise_query import RandomizedNoiseQuery


def describe_query(query: dp_query.DPQuery) -> Dict[str, Any]:
    """Returns mechanism, noise schedule, noise multiplier and clip of a known query.

    Unknown queries give mechanism "custom" and no noise multiplier, which the
    accountant treats as having no formal guarantee it can compute.
    """
    settings: Dict[str, Any] = {
        "mechanism": "custom",
        "noise_schedule": "regular",
        "noise_probability": 1.0,
        "on_skip": "release",
        "noise_multiplier": None,
        "l2_norm_clip": None,
        "l1_norm_clip": None,
    }
    if isinstance(query, RandomizedNoiseQuery):
        settings.update(describe_query(query.inner_query))
        settings.update(
            noise_schedule="random",
            noise_probability=query.noise_probability,
            on_skip=query.on_skip,
        )
    elif isinstance(query, gaussian_query.GaussianSumQuery):
        clip, stddev = float(query._l2_norm_clip), float(query._stddev)
        settings.update(mechanism="gaussian", l2_norm_clip=clip, noise_multiplier=stddev / clip)
    elif isinstance(query, LaplaceSumQuery):
        settings.update(
            mechanism="laplace",
            l1_norm_clip=query.l1_norm_clip,
            noise_multiplier=query.noise_multiplier,
        )
    elif isinstance(query, no_privacy_query.NoPrivacySumQuery):
        settings.update(mechanism="none", noise_multiplier=0.0)
    return settings
