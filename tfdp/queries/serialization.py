"""Config dicts for the sum queries tfdp knows, so optimizers holding them can be saved."""

from __future__ import annotations

from typing import Any, Dict

from tfdp._tf_privacy import dp_query, gaussian_query, no_privacy_query

from tfdp.queries.laplace_sum_query import LaplaceSumQuery
from tfdp.queries.randomized_noise_query import RandomizedNoiseQuery


def query_to_config(query: dp_query.DPQuery) -> Dict[str, Any]:
    """Returns `{"class_name": ..., "config": {...}}` for a query tfdp can rebuild.

    Raises ValueError for other queries: their construction is not recorded, so
    saving them would silently lose the privacy settings.
    """
    if isinstance(query, (LaplaceSumQuery, RandomizedNoiseQuery)):
        config = query.get_config()
    elif isinstance(query, gaussian_query.GaussianSumQuery):
        config = {"l2_norm_clip": float(query._l2_norm_clip), "stddev": float(query._stddev)}
    elif isinstance(query, no_privacy_query.NoPrivacySumQuery):
        config = {}
    else:
        raise ValueError(
            f"Cannot serialize a {type(query).__name__}: tfdp can save GaussianSumQuery, "
            "NoPrivacySumQuery, LaplaceSumQuery and RandomizedNoiseQuery. Build the optimizer "
            "from its convenience arguments, or save the model's weights only."
        )
    return {"class_name": type(query).__name__, "config": config}


def query_from_config(config: Dict[str, Any]) -> dp_query.DPQuery:
    """Rebuilds a query from `query_to_config`'s output."""
    name, kwargs = config["class_name"], dict(config["config"])
    if name == "GaussianSumQuery":
        return gaussian_query.GaussianSumQuery(**kwargs)
    if name == "NoPrivacySumQuery":
        return no_privacy_query.NoPrivacySumQuery()
    if name == "LaplaceSumQuery":
        return LaplaceSumQuery(**kwargs)
    if name == "RandomizedNoiseQuery":
        kwargs["inner_query"] = query_from_config(kwargs["inner_query"])
        return RandomizedNoiseQuery(**kwargs)
    raise ValueError(f"Unknown query class {name!r} in config.")
