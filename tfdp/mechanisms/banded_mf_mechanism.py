"""The banded DP-MF mechanism: L2 clipping, correlated Gaussian noise, cyclic-Poisson accounting.

Registered as "banded_mf". Each step releases the clipped sum plus (C^{-1} z)_t for a
b-banded, column-normalized Toeplitz strategy C (`tfdp.mechanisms.banded_mf`). Under
cyclic Poisson sampling (`tfdp.data.cyclic_poisson_batches`) the accounting is that of
ceil(T / b) Poisson(q = B * b / n)-subsampled Gaussians (`tfdp.accounting.banded_mf`),
never T steps at B / n: `dp_event` needs the bands and converts.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import dp_accounting

from tfdp._validation import check_non_negative, check_positive
from tfdp.mechanisms.base import NoiseMechanism
from tfdp.mechanisms.registry import register_mechanism
from tfdp.names import Accountant
from tfdp.queries.banded_mf_sum_query import BandedMFSumQuery


@register_mechanism
class BandedMFMechanism(NoiseMechanism):
    """Banded matrix factorization (BandMF): the Gaussian mechanism's clip, correlated noise.

    The query is `BandedMFSumQuery` (it holds the bands and the strategy's coefficients);
    the noise recurrence lives in the DP optimizer (`tfdp.randomness.BandedNoise`).
    """

    name = "banded_mf"
    title = "Banded matrix-factorization"
    clip_kind = "l2"
    clip_argument = "l2_norm_clip"
    noise_multiplier_meaning = "std of z / L2 clip, the noise being C^-1 z"
    accountants = (Accountant.PLD, Accountant.RDP)
    query_class = BandedMFSumQuery

    def make_query(self, clip, noise_multiplier, floating_point_safe=False, *,
                   bands: Optional[int] = None, coefficients=None):
        """A BandedMFSumQuery; `bands` is required (ValueError suggesting a value)."""
        if bands is None:
            raise ValueError(
                "mechanism='banded_mf' needs `bands` (b, the strategy's diagonals and the "
                "number of cyclic-Poisson folds), e.g. bands=4; batch_size * bands must not "
                "exceed the number of examples.")
        clip = check_positive(self.clip_argument, clip)
        noise_multiplier = check_non_negative("noise_multiplier", noise_multiplier)
        return BandedMFSumQuery(clip, noise_multiplier * clip, bands, coefficients,
                                noise_multiplier=noise_multiplier,
                                floating_point_safe=floating_point_safe)

    def read_query(self, query) -> Tuple[float, float]:
        """(clip, noise multiplier) of a BandedMFSumQuery."""
        return query.l2_norm_clip, query.noise_multiplier

    def query_settings(self, query) -> Dict[str, Any]:
        """The bands, beside clip and multiplier, for `describe_query`."""
        return {"bands": query.bands}

    def query_to_config(self, query):
        """BandedMFSumQuery's constructor arguments."""
        return query.get_config()

    def query_from_config(self, config):
        """BandedMFSumQuery from `query_to_config`'s output."""
        return BandedMFSumQuery(**config)

    def step_event(self, noise_multiplier):
        """One Gaussian release of the normalized strategy (sensitivity 1 per participation)."""
        return dp_accounting.GaussianDpEvent(noise_multiplier)

    def dp_event(self, noise_multiplier, sampling_probability=None, count=1, *,
                 bands: Optional[int] = None):
        """`count` steps at the run's rate B / n = `sampling_probability`, under cyclic Poisson.

        Accounted as ceil(count / bands) participations at q = sampling_probability * bands
        (`tfdp.accounting.banded_mf.banded_mf_dp_event`). Refused without `bands` or without
        sampling: the amplification by cyclic Poisson sampling is the guarantee.
        """
        from tfdp.accounting.banded_mf import banded_mf_dp_event  # pylint: disable=import-outside-toplevel

        if bands is None or sampling_probability is None:
            raise ValueError(
                "The banded_mf mechanism's event needs `bands` and the run's sampling rate "
                "B / n (cyclic Poisson sampling); it composes ceil(steps / bands) "
                "participations at q = B * bands / n, never `steps` at B / n.")
        if count == 0:
            return dp_accounting.NoOpDpEvent()
        q = float(sampling_probability) * int(bands)
        if q > 1 + 1e-12:
            raise ValueError(
                f"Cyclic Poisson sampling with {bands} bands at rate {sampling_probability:g} "
                f"needs batch_size * bands <= num_examples (q = {q:g} > 1): use fewer bands "
                "or a smaller batch size.")
        return banded_mf_dp_event(noise_multiplier, min(q, 1.0), count, bands)

    def statement(self, noise_multiplier, accountant, halved=""):
        """Names the strategy and the accounting's assumptions."""
        from tfdp.accounting.banded_mf import BANDED_MF_ASSUMPTIONS  # pylint: disable=import-outside-toplevel

        return (f"Mechanism: banded matrix-factorization (correlated Gaussian) noise, noise "
                f"multiplier {noise_multiplier:g} ({self.noise_multiplier_meaning}){halved}. "
                f"{accountant.upper()} accounting. {BANDED_MF_ASSUMPTIONS}")
