"""Argument checks shared across tfdp, each raising a ValueError that says what is allowed."""

from __future__ import annotations

import math
from typing import Any, Iterable


def check_positive(name: str, value: Any) -> float:
    """Returns `value` as a float, or raises if it is not a finite number > 0."""
    if value is None or isinstance(value, bool):
        raise ValueError(f"`{name}` must be a number > 0, got {value!r}.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a number > 0, got {value!r}.") from None
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"`{name}` must be a finite number > 0, got {value!r}.")
    return number


def check_non_negative(name: str, value: Any) -> float:
    """Returns `value` as a float, or raises if it is not a finite number >= 0."""
    if value is None or isinstance(value, bool):
        raise ValueError(f"`{name}` must be a number >= 0, got {value!r}.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a number >= 0, got {value!r}.") from None
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"`{name}` must be a finite number >= 0, got {value!r}.")
    return number


def check_probability(name: str, value: Any) -> float:
    """Returns `value` as a float, or raises if it is outside [0, 1]."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a probability in [0, 1], got {value!r}.") from None
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"`{name}` must be a probability in [0, 1], got {value!r}.")
    return number


def check_choice(name: str, value: Any, allowed: Iterable[str]) -> str:
    """Returns `value`, or raises if it is not one of `allowed`."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"`{name}` must be one of {allowed}, got {value!r}.")
    return value


def check_positive_int(name: str, value: Any) -> int:
    """Returns `value` as an int, or raises if it is not a whole number >= 1."""
    if isinstance(value, bool) or not isinstance(value, (int,)) and not (
        hasattr(value, "__index__")
    ):
        raise ValueError(f"`{name}` must be a whole number >= 1, got {value!r}.")
    number = int(value)
    if number < 1:
        raise ValueError(f"`{name}` must be a whole number >= 1, got {value!r}.")
    return number
