"""Per-step DpEvents and the dp_accounting accountants that turn their composition into epsilon."""

from __future__ import annotations

import math
from typing import Optional

import dp_accounting

ACCOUNTANTS = ("rdp", "pld")
PRIVATE_MECHANISMS = ("gaussian", "laplace")

# dp_accounting's default grid. PLD bounds are pessimistic, so a coarser grid only
# makes epsilon larger (still a valid bound), never smaller.
DEFAULT_PLD_DISCRETIZATION = 1e-4


def default_accountant(mechanism: str) -> str:
    """RDP for the Gaussian mechanism; PLD for Laplace (RDP refuses sampled Laplace)."""
    return "pld" if mechanism == "laplace" else "rdp"


def make_accountant(
    accountant: str, value_discretization_interval: float = DEFAULT_PLD_DISCRETIZATION
) -> dp_accounting.PrivacyAccountant:
    """A fresh dp_accounting accountant (add-or-remove-one adjacency)."""
    if accountant == "rdp":
        return dp_accounting.rdp.RdpAccountant()
    return dp_accounting.pld.PLDAccountant(
        value_discretization_interval=value_discretization_interval
    )


def step_event(
    mechanism: str, noise_multiplier: float, sampling_probability: Optional[float]
) -> dp_accounting.DpEvent:
    """One noisy step: the noise mechanism, Poisson-subsampled when a probability is given.

    `sampling_probability=None` means no amplification (each example in the step).
    """
    if mechanism == "gaussian":
        event = dp_accounting.GaussianDpEvent(noise_multiplier)
    elif mechanism == "laplace":
        event = dp_accounting.LaplaceDpEvent(noise_multiplier)
    else:
        raise ValueError(f"No noisy step event for mechanism {mechanism!r}.")
    if sampling_probability is None:
        return event
    return dp_accounting.PoissonSampledDpEvent(sampling_probability, event)


def composed_event(
    mechanism: str, noise_multiplier: float, sampling_probability: Optional[float], count: int
) -> dp_accounting.DpEvent:
    """`count` identical steps composed (a no-op event when count is 0)."""
    if count == 0:
        return dp_accounting.NoOpDpEvent()
    return dp_accounting.SelfComposedDpEvent(
        step_event(mechanism, noise_multiplier, sampling_probability), count
    )


def epsilon_of(
    event: dp_accounting.DpEvent,
    delta: float,
    accountant: str,
    value_discretization_interval: float = DEFAULT_PLD_DISCRETIZATION,
) -> float:
    """Epsilon at `delta` of `event` under a fresh accountant of the given kind."""
    if isinstance(event, dp_accounting.NoOpDpEvent):
        return 0.0
    result = make_accountant(accountant, value_discretization_interval)
    result.compose(event)
    epsilon = float(result.get_epsilon(delta))
    # Never report a negative or NaN figure: treat either as "no bound computed".
    if math.isnan(epsilon):
        return math.inf
    return max(epsilon, 0.0)
