"""Per-step DpEvents and the dp_accounting accountants that turn their composition into epsilon.

The events themselves come from the mechanism objects (`tfdp.mechanisms`); this module
composes them and reads epsilon off a fresh accountant.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Optional

import dp_accounting

from tfdp.mechanisms import Accountant, get_mechanism, values

ACCOUNTANTS = values(Accountant)


class _ExcludedOrderFilter(logging.Filter):
    """Drops dp_accounting's "failed to converge ... Excluding this order" warnings.

    When a fractional RDP order's series does not converge, dp_accounting leaves that
    order out of the minimum over orders, so epsilon can only come out larger (still a
    valid bound, never an understatement). The warning repeats for every order of every
    noise level a calibration tries, which buries a run's own output.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "Excluding this order" not in record.getMessage()


logging.getLogger("absl").addFilter(_ExcludedOrderFilter())

# dp_accounting's default grid. PLD bounds are pessimistic, so a coarser grid only
# makes epsilon larger (still a valid bound), never smaller.
DEFAULT_PLD_DISCRETIZATION = 1e-4


def make_accountant(
    accountant: str, value_discretization_interval: float = DEFAULT_PLD_DISCRETIZATION
) -> dp_accounting.PrivacyAccountant:
    """A fresh dp_accounting accountant (add-or-remove-one adjacency)."""
    if accountant == Accountant.RDP:
        return dp_accounting.rdp.RdpAccountant()
    return dp_accounting.pld.PLDAccountant(
        value_discretization_interval=value_discretization_interval
    )


def composed_event(
    mechanism: str, noise_multiplier: float, sampling_probability: Optional[float], count: int
) -> dp_accounting.DpEvent:
    """`count` identical noisy steps of `mechanism` (a no-op event when count is 0).

    `sampling_probability=None` means no amplification (each example in every step).
    """
    return get_mechanism(mechanism).dp_event(noise_multiplier, sampling_probability, count)


def epsilon_of(
    event: dp_accounting.DpEvent,
    delta: float,
    accountant: str,
    value_discretization_interval: float = DEFAULT_PLD_DISCRETIZATION,
) -> float:
    """Epsilon at `delta` of `event` under a fresh accountant of the given kind.

    The figure is a pure function of its arguments and costs about 0.1 s for RDP (the
    subsampled Gaussian's series over every order), while a run asks for the same events
    again and again (each epoch's figure is the previous epoch's projection; seeds,
    shadow models and sweeps repeat whole runs), so hashable events are memoized.
    """
    if isinstance(event, dp_accounting.NoOpDpEvent):
        return 0.0
    try:
        hash(event)
    except TypeError:  # a ComposedDpEvent holds a list
        return _epsilon_of(event, delta, accountant, value_discretization_interval)
    return _memoized_epsilon_of(event, float(delta), str(accountant),
                                float(value_discretization_interval))


def _epsilon_of(event, delta, accountant, value_discretization_interval) -> float:
    result = make_accountant(accountant, value_discretization_interval)
    result.compose(event)
    epsilon = float(result.get_epsilon(delta))
    # Never report a negative or NaN figure: treat either as "no bound computed".
    if math.isnan(epsilon):
        return math.inf
    return max(epsilon, 0.0)


# Events are frozen attrs classes (equal by value); 4096 figures are a few hundred kB.
_memoized_epsilon_of = functools.lru_cache(maxsize=4096)(_epsilon_of)
