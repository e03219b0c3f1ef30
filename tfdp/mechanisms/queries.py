"""Sum queries from settings and back: build, describe and (de)serialize through the registry.

These are the only places that map between plain settings (mechanism name, clip,
noise multiplier, schedule) and DPQuery objects; each step asks the registered
mechanism (or the random schedule wrapping it) instead of branching on names.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from tfdp._tf_privacy import dp_query
from tfdp._validation import check_choice, check_non_negative, check_probability
from tfdp.mechanisms.no_noise import NO_NOISE_MECHANISM
from tfdp.mechanisms.random_schedule import RANDOM_SCHEDULE
from tfdp.mechanisms.registry import get_mechanism, mechanism_names, mechanism_of_query
from tfdp.names import NO_NOISE, NoiseSchedule, OnSkip, values


def make_dp_sum_query(
    mechanism: str = "gaussian",
    noise_schedule: str = NoiseSchedule.REGULAR,
    *,
    noise_multiplier: Optional[float],
    l2_norm_clip: Optional[float] = None,
    l1_norm_clip: Optional[float] = None,
    noise_probability: float = 1.0,
    on_skip: str = OnSkip.RELEASE,
    seed: Optional[int] = None,
    floating_point_safe: bool = False,
    bands: Optional[int] = None,
    strategy_coefficients: Optional[Any] = None,
) -> dp_query.SumAggregationDPQuery:
    """Returns the sum query of a registered mechanism, every step or on the random schedule.

    * gaussian: TF Privacy's `GaussianSumQuery` (L2 clip, stddev =
      noise_multiplier * l2_norm_clip); laplace: `LaplaceSumQuery` (L1 clip, scale
      = noise_multiplier * l1_norm_clip); any other registered mechanism: its
      `make_query`, with the clip passed as its `clip_argument`.
    * noise_schedule="random": the query wrapped in `RandomizedNoiseQuery`, noise on
      a step with probability `noise_probability` (RanN-DP-SGD).
    * floating_point_safe: noise on a grid (`tfdp.randomness.grid`): the same
      accounting, no leak through the low-order bits of floating-point noise.

    * banded_mf: `bands` (required) and optionally `strategy_coefficients` (default the
      truncated square root of the prefix sums); refused on the random schedule.

    Raises ValueError naming the argument when a value is out of range or the clip
    does not match the mechanism (Laplace noise is DP only with an L1 clip).
    """
    chosen = get_mechanism(mechanism)
    check_choice("noise_schedule", noise_schedule, values(NoiseSchedule))
    check_choice("on_skip", on_skip, values(OnSkip))
    noise_probability = check_probability("noise_probability", noise_probability)
    if noise_multiplier is None:
        raise ValueError("`noise_multiplier` is required: a number >= 0 (noise std / clip).")
    noise_multiplier = check_non_negative("noise_multiplier", noise_multiplier)
    if noise_schedule == NoiseSchedule.REGULAR and noise_probability != 1.0:
        raise ValueError(
            "`noise_probability` only applies to noise_schedule='random'; with "
            f"noise_schedule='regular' every step is noisy, so leave it at 1.0 (got {noise_probability})."
        )
    clips = {"l2_norm_clip": l2_norm_clip, "l1_norm_clip": l1_norm_clip}
    wrong = [name for name, value in clips.items()
             if value is not None and name != chosen.clip_argument]
    if wrong:
        raise ValueError(_wrong_clip_message(chosen, wrong[0]))
    clip = clips.get(chosen.clip_argument)
    if clip is None:
        raise ValueError(f"mechanism={chosen.name!r} needs `{chosen.clip_argument}`, a number > 0.")
    banded = chosen.name == "banded_mf"
    if not banded and (bands is not None or strategy_coefficients is not None):
        raise ValueError(
            "`bands` / `strategy_coefficients` set the correlated noise of "
            f"mechanism='banded_mf'; mechanism={chosen.name!r} adds independent noise: drop "
            "them, or use mechanism='banded_mf'.")
    if banded and noise_schedule == NoiseSchedule.RANDOM:
        raise ValueError(
            "noise_schedule='random' cannot be used with mechanism='banded_mf': a noiseless "
            "or dropped step would break the noise recurrence the accounting assumes. Use "
            "noise_schedule='regular'.")
    if banded:
        query = chosen.make_query(clip, noise_multiplier, floating_point_safe, bands=bands,
                                  coefficients=strategy_coefficients)
    # Only asked of mechanisms when wanted: one registered with the two-argument make_query
    # (before the grid existed) keeps working.
    elif floating_point_safe:
        query = chosen.make_query(clip, noise_multiplier, True)
    else:
        query = chosen.make_query(clip, noise_multiplier)
    if noise_schedule == NoiseSchedule.RANDOM:
        query = RANDOM_SCHEDULE.wrap(query, noise_probability, on_skip=on_skip, seed=seed)
    return query


def _wrong_clip_message(mechanism, given: str) -> str:
    if mechanism.clip_kind == "l1":
        return (f"`{given}` cannot be used with mechanism={mechanism.name!r}: {mechanism.title} "
                "noise is differentially private only for L1 sensitivity. Pass "
                f"`{mechanism.clip_argument}` instead.")
    return (f"`{given}` is for another mechanism; the {mechanism.title} mechanism clips the "
            f"{mechanism.clip_kind.upper()} norm: pass `{mechanism.clip_argument}` instead.")


def describe_query(query: dp_query.DPQuery) -> Dict[str, Any]:
    """Returns mechanism, noise schedule, noise multiplier and clips of a known query.

    Unknown queries give mechanism "custom" and no noise multiplier, which the
    accountant treats as having no formal guarantee it can compute.
    """
    settings: Dict[str, Any] = {
        "mechanism": "custom",
        "noise_schedule": str(NoiseSchedule.REGULAR),
        "noise_probability": 1.0,
        "on_skip": str(OnSkip.RELEASE),
        "noise_multiplier": None,
        "l2_norm_clip": None,
        "l1_norm_clip": None,
        "floating_point_safe": False,
    }
    if RANDOM_SCHEDULE.owns_query(query):
        settings.update(describe_query(query.inner_query))
        settings.update(RANDOM_SCHEDULE.settings(query))
        return settings
    if NO_NOISE_MECHANISM.owns_query(query):
        settings.update(mechanism=NO_NOISE, noise_multiplier=0.0)
        return settings
    mechanism = mechanism_of_query(query)
    if mechanism is not None:
        clip, noise_multiplier = mechanism.read_query(query)
        settings.update(mechanism=mechanism.name, noise_multiplier=noise_multiplier,
                        floating_point_safe=bool(getattr(query, "floating_point_safe", False)))
        settings[mechanism.clip_argument] = clip
        settings.update(getattr(mechanism, "query_settings", lambda q: {})(query))
    return settings


def clip_norm_kind(query: dp_query.DPQuery) -> Optional[str]:
    """"l2" or "l1" when the query clips each record's global norm that way, else None."""
    if RANDOM_SCHEDULE.owns_query(query):
        return clip_norm_kind(query.inner_query)
    mechanism = mechanism_of_query(query)
    return None if mechanism is None else mechanism.clip_kind


def query_to_config(query: dp_query.DPQuery) -> Dict[str, Any]:
    """Returns `{"class_name": ..., "config": {...}}` for a query tfdp can rebuild.

    Raises ValueError for other queries: their construction is not recorded, so
    saving them would silently lose the privacy settings.
    """
    if RANDOM_SCHEDULE.owns_query(query):
        config = RANDOM_SCHEDULE.query_to_config(query, query_to_config(query.inner_query))
    elif NO_NOISE_MECHANISM.owns_query(query):
        config = {}
    else:
        mechanism = mechanism_of_query(query)
        if mechanism is None:
            known = ", ".join(type(get_mechanism(n)).query_class.__name__ for n in mechanism_names())
            raise ValueError(
                f"Cannot serialize a {type(query).__name__}: tfdp can save {known}, "
                "NoPrivacySumQuery and RandomizedNoiseQuery. Build the optimizer from its "
                "convenience arguments, or save the model's weights only."
            )
        config = mechanism.query_to_config(query)
    return {"class_name": type(query).__name__, "config": config}


def query_from_config(config: Dict[str, Any]) -> dp_query.DPQuery:
    """Rebuilds a query from `query_to_config`'s output."""
    name, kwargs = config["class_name"], dict(config["config"])
    if name == RANDOM_SCHEDULE.query_class.__name__:
        kwargs["inner_query"] = query_from_config(kwargs["inner_query"])
        return RANDOM_SCHEDULE.query_class(**kwargs)
    if name == NO_NOISE_MECHANISM.query_class.__name__:
        return NO_NOISE_MECHANISM.make_query()
    for mechanism_name in mechanism_names():
        mechanism = get_mechanism(mechanism_name)
        if mechanism.query_class.__name__ == name:
            return mechanism.query_from_config(kwargs)
    raise ValueError(f"Unknown query class {name!r} in config.")
