"""The names a run's privacy settings are spelled with, defined once (re-exported by tfdp.mechanisms).

Every module that accepts or compares a noise schedule, an `on_skip` action or a
sampling mode takes its allowed values from here. The members are `str`s, so
`"random" == NoiseSchedule.RANDOM` and JSON records keep plain strings.
"""

from __future__ import annotations

import enum
from typing import Tuple, Type

# The mechanism name of training without noise (No-DP); noise mechanisms are registered
# objects (`tfdp.mechanisms.get_mechanism`).
NO_NOISE = "none"


class NoiseSchedule(enum.StrEnum):
    """When noise is added: every step (RegN) or on steps where a coin comes up 1 (RanN)."""

    REGULAR = "regular"
    RANDOM = "random"


class OnSkip(enum.StrEnum):
    """What a noiseless step of the random schedule does."""

    RELEASE = "release"  # the exact clipped sum is applied: no formal DP when p < 1
    DROP = "drop"  # nothing touched, no update: DP composes over the noisy steps


class Sampling(enum.StrEnum):
    """How batches were drawn, as the accountant must assume."""

    POISSON = "poisson"  # each example joins each step independently (tfdp.data.poisson_batches)
    SHUFFLE = "shuffle"  # fixed-size shuffled batches (plain model.fit)


def values(choices: Type[enum.Enum]) -> Tuple[str, ...]:
    """The plain string values of an enum of names, in definition order (for flags and errors)."""
    return tuple(member.value for member in choices)


class Accountant(enum.StrEnum):
    """The dp_accounting accountants tfdp composes events with."""

    RDP = "rdp"  # Renyi DP: tight for the Gaussian mechanism
    PLD = "pld"  # privacy loss distributions: also reads sampled Laplace events
