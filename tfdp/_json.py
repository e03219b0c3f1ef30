"""The one JSON encoding of tfdp records: infinite epsilons as the string "inf"."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np


# JSON has no infinity: these strings stand for the non-finite floats, everywhere tfdp writes JSON.
NON_FINITE_TEXT = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def non_finite_text(value: float) -> str:
    """"inf", "-inf" or "nan" for a non-finite float."""
    if math.isnan(value):
        return "nan"
    return "inf" if value > 0 else "-inf"


def jsonable(value: Any) -> Any:
    """`value` with only JSON types inside: what `json.dump` can write, strictly.

    Dicts, lists and tuples are converted recursively (dict keys become strings);
    NumPy scalars and arrays become Python numbers and lists; +inf and -inf become
    "inf" and "-inf" (an infinite epsilon means "no formal guarantee" and must
    survive the round trip); NaN becomes None. Objects with `to_dict()` and
    dataclasses are converted through their fields.
    """
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return None
        return value if math.isfinite(value) else non_finite_text(value)
    if hasattr(value, "to_dict") and callable(value.to_dict):
        return jsonable(value.to_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    return value
