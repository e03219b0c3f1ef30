"""The Gaussian mechanism: L2 clipping, Gaussian noise, RDP accounting (PLD on request)."""

from __future__ import annotations

from typing import Tuple

import dp_accounting

from tfdp._tf_privacy import gaussian_query
from tfdp._validation import check_non_negative, check_positive
from tfdp.mechanisms.base import NoiseMechanism
from tfdp.names import Accountant
from tfdp.mechanisms.registry import register_mechanism
from tfdp.queries.gaussian_sum_query import GaussianSumQuery


@register_mechanism
class GaussianMechanism(NoiseMechanism):
    """Each unit clipped to L2 norm C; the sum gets N(0, (noise_multiplier * C)^2) per coordinate.

    Built on TF Privacy's `GaussianSumQuery`. The event of a step is
    `GaussianDpEvent(noise_multiplier)`; RDP reads it tightly, PLD too.
    """

    name = "gaussian"
    title = "Gaussian"
    clip_kind = "l2"
    clip_argument = "l2_norm_clip"
    noise_multiplier_meaning = "noise std / L2 clip"
    accountants = (Accountant.RDP, Accountant.PLD)
    query_class = gaussian_query.GaussianSumQuery

    def make_query(self, clip, noise_multiplier, floating_point_safe=False):
        """A GaussianSumQuery with stddev = noise_multiplier * clip (tfdp's readable subclass)."""
        clip = check_positive(self.clip_argument, clip)
        noise_multiplier = check_non_negative("noise_multiplier", noise_multiplier)
        return GaussianSumQuery(clip, noise_multiplier * clip, noise_multiplier=noise_multiplier,
                                floating_point_safe=floating_point_safe)

    def read_query(self, query) -> Tuple[float, float]:
        """(clip, noise multiplier) of a GaussianSumQuery.

        tfdp's subclass gives the values it was built with. A query built directly
        from TF Privacy is read from its initial global state (its public protocol):
        the float32 clip and std the noise is actually drawn with.
        """
        if isinstance(query, GaussianSumQuery):
            return query.l2_norm_clip, query.noise_multiplier
        state = query.initial_global_state()
        clip, stddev = float(state.l2_norm_clip), float(state.stddev)
        return clip, stddev / clip

    def query_to_config(self, query):
        """GaussianSumQuery's constructor arguments (l2_norm_clip, stddev[, noise_multiplier])."""
        if isinstance(query, GaussianSumQuery):
            return query.get_config()
        clip, noise_multiplier = self.read_query(query)
        return {"l2_norm_clip": clip, "stddev": noise_multiplier * clip}

    def query_from_config(self, config):
        """tfdp's GaussianSumQuery from `query_to_config`'s output."""
        return GaussianSumQuery(**config)

    def step_event(self, noise_multiplier):
        """One Gaussian release of sensitivity-1-normalized noise."""
        return dp_accounting.GaussianDpEvent(noise_multiplier)
