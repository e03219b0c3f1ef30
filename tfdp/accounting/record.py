"""The privacy record every training run reports, whatever its method, and No-DP's record."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Optional, Protocol, runtime_checkable

NO_PRIVACY_STATEMENT = (
    "No-DP: trained without differential privacy; there is no privacy guarantee (epsilon is "
    "infinite)."
)


@runtime_checkable
class PrivacyRecord(Protocol):
    """What reports, exports and audits read from any run's privacy accounting.

    `PrivacyResult` (DP-SGD), `OtherMethodPrivacy` (residual perturbation,
    NeuralDP) and `NoPrivacy` (No-DP) satisfy it. `epsilon` is the formal
    guarantee, `math.inf` when there is none; every other figure is labelled in
    `statement`.
    """

    epsilon: float
    epsilon_noisy_steps_only: float
    delta: float
    accountant: Optional[str]
    statement: str

    @property
    def is_guarantee(self) -> bool:
        """True when `epsilon` is a finite, formal (epsilon, delta)-DP guarantee."""

    def to_dict(self) -> Dict[str, Any]:
        """The record as plain values (epsilon may be math.inf)."""


class RecordMethods:
    """`to_dict` and `str` for a dataclass record that has a `statement` field."""

    def to_dict(self) -> Dict[str, Any]:
        """All fields as plain Python values (epsilon may be math.inf)."""
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        return self.statement


@dataclasses.dataclass(frozen=True)
class NoPrivacy(RecordMethods):
    """The privacy record of a run trained without differential privacy: epsilon = inf."""

    delta: float
    statement: str = NO_PRIVACY_STATEMENT
    epsilon: float = math.inf
    epsilon_noisy_steps_only: float = math.inf
    accountant: Optional[str] = None

    @property
    def is_guarantee(self) -> bool:
        """Always False: no noise, no guarantee."""
        return False


def no_privacy(delta: float, *, reason: Optional[str] = None) -> NoPrivacy:
    """The No-DP record at `delta`; `reason` replaces the default statement."""
    return NoPrivacy(delta=float(delta), statement=reason or NO_PRIVACY_STATEMENT)
