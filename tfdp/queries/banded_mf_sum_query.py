"""The sum query of banded DP matrix factorization: L2 clip, correlated Gaussian noise.

`BandedMFSumQuery` clips and sums like the Gaussian query and records the strategy (b
bands, its coefficients). Its noise at step t is (C^{-1} z)_t, which depends on the
noise of the b-1 steps before: a stateful stream (`tfdp.randomness.BandedNoise`) that the
DP optimizer holds in memory (never in the query's global state, which checkpoints and
files save). The optimizer draws it (`noised_with`); a query used on its own refuses to
noise, since a lone call cannot know the earlier steps' noise.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import numpy as np
import tensorflow as tf

from tfdp._validation import check_positive_int
from tfdp.queries.gaussian_sum_query import GaussianSumQuery


class BandedMFSumQuery(GaussianSumQuery):
    """L2 clip, then correlated noise of a b-banded Toeplitz strategy (DP-MF, BandMF).

    Args:
      l2_norm_clip: the L2 bound of every record.
      stddev: the std of z (the noise before C^{-1}): noise_multiplier * l2_norm_clip.
      bands: b, the strategy's number of nonzero diagonals (1 is DP-SGD).
      coefficients: c_0..c_{b-1}; default the truncated square root of the prefix sums
        (`tfdp.mechanisms.banded_mf.banded_toeplitz_coefficients`). Normalized to L2
        norm 1, the sensitivity the accounting assumes.
      noise_multiplier: stddev / l2_norm_clip (default: that ratio).
      floating_point_safe: refused (ValueError): grid noise is not correlated noise.
    """

    def __init__(self, l2_norm_clip: float, stddev: float, bands: int,
                 coefficients: Optional[Sequence[float]] = None,
                 noise_multiplier: Optional[float] = None, floating_point_safe: bool = False):
        from tfdp.mechanisms.banded_mf import (  # pylint: disable=import-outside-toplevel
            banded_toeplitz_coefficients, normalize_coefficients)

        if floating_point_safe:
            raise ValueError(
                "floating_point_safe_noise is not available with mechanism='banded_mf': the "
                "grid sampler adds independent integer noise, not the strategy's correlated "
                "noise. Use floating_point_safe_noise=False, or mechanism='gaussian'.")
        super().__init__(l2_norm_clip, stddev, noise_multiplier=noise_multiplier)
        bands = check_positive_int("bands", bands)
        coef = (banded_toeplitz_coefficients(bands) if coefficients is None
                else normalize_coefficients(coefficients))
        if coef.size != bands:
            raise ValueError(f"`coefficients` has {coef.size} entries, but bands={bands}: "
                             "give one coefficient per band.")
        self._bands = bands
        self._coefficients = tuple(float(c) for c in coef)

    @property
    def bands(self) -> int:
        """b, the strategy's number of nonzero diagonals."""
        return self._bands

    @property
    def coefficients(self) -> np.ndarray:
        """The normalized strategy coefficients c_0..c_{b-1}."""
        return np.asarray(self._coefficients)

    def get_noised_result_with_seed(self, sample_state, global_state, seed):
        """Refused: the noise depends on earlier steps, which only the DP optimizer holds."""
        raise ValueError(
            "BandedMFSumQuery's noise is correlated across steps: train with a tfdp DP "
            "optimizer (mechanism='banded_mf'), which holds the noise recurrence in memory. "
            "A lone query call cannot know the earlier steps' noise.")

    def noised_with(self, sample_state, noise: Sequence[tf.Tensor]):
        """The clipped sum plus the optimizer's correlated noise, leaf by leaf."""
        leaves = tf.nest.flatten(sample_state)
        noised = [leaf + tf.cast(n, leaf.dtype) for leaf, n in zip(leaves, noise)]
        return tf.nest.pack_sequence_as(sample_state, noised)

    def get_config(self) -> Dict[str, Any]:
        """The constructor arguments (the coefficients as a list of floats)."""
        return {"l2_norm_clip": self.l2_norm_clip, "stddev": self.stddev,
                "bands": self._bands, "coefficients": list(self._coefficients),
                "noise_multiplier": self.noise_multiplier}
