"""The Laplace mechanism: L1 clipping, Laplace noise, PLD accounting."""

from __future__ import annotations

from typing import Tuple

import dp_accounting

from tfdp.mechanisms.base import NoiseMechanism
from tfdp.names import Accountant
from tfdp.mechanisms.registry import register_mechanism
from tfdp.queries.laplace_sum_query import LaplaceSumQuery


@register_mechanism
class LaplaceMechanism(NoiseMechanism):
    """Each unit clipped to L1 norm C; the sum gets Laplace(noise_multiplier * C) per coordinate.

    Laplace noise is DP only for L1 sensitivity. dp_accounting's RDP accountant
    refuses Poisson-sampled Laplace events, so the accountant is PLD.
    """

    name = "laplace"
    title = "Laplace"
    clip_kind = "l1"
    clip_argument = "l1_norm_clip"
    noise_multiplier_meaning = "noise scale / L1 clip"
    accountants = (Accountant.PLD,)
    query_class = LaplaceSumQuery

    def make_query(self, clip, noise_multiplier, floating_point_safe=False):
        """tfdp's LaplaceSumQuery."""
        return LaplaceSumQuery(l1_norm_clip=clip, noise_multiplier=noise_multiplier,
                               floating_point_safe=floating_point_safe)

    def read_query(self, query) -> Tuple[float, float]:
        """(l1_norm_clip, noise_multiplier) from the query's properties."""
        return query.l1_norm_clip, query.noise_multiplier

    def step_event(self, noise_multiplier):
        """One Laplace release; its epsilon before sampling is 1 / noise_multiplier."""
        return dp_accounting.LaplaceDpEvent(noise_multiplier)

    def accountant_refusal(self, accountant):
        """RDP cannot read sampled Laplace events."""
        return (f"accountant={accountant!r} cannot account for Poisson-sampled Laplace noise "
                "(dp_accounting's RDP accountant refuses it); use accountant='pld' or None.")

    def statement(self, noise_multiplier, accountant, halved=""):
        """Names the accountant and why it is PLD."""
        return (f"Mechanism: Laplace noise, noise multiplier {noise_multiplier:g} "
                f"({self.noise_multiplier_meaning}){halved}. PLD accounting (privacy loss "
                "distributions): the RDP accountant cannot account for Poisson-sampled "
                "Laplace noise.")
