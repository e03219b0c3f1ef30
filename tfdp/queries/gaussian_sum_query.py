"""TF Privacy's Gaussian sum query, its settings readable and its noise from an explicit seed."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import dp_accounting
import tensorflow as tf

from tfdp._tf_privacy import gaussian_query
from tfdp._validation import check_non_negative, check_positive
from tfdp.queries.seeded import (SeededNoiseQuery, noise_each_leaf, noise_on_grid,
                                 settings_agree)
from tfdp.randomness import gaussian_noise


class GaussianSumQuery(SeededNoiseQuery, gaussian_query.GaussianSumQuery):
    """`tensorflow_privacy`'s GaussianSumQuery (L2 clip, Gaussian noise of std `stddev`).

    The same query, state and noise distribution, with two changes: the noise is drawn
    from an explicit seed (`get_noised_result_with_seed`; `get_noised_result` draws one
    from the OS's entropy), never from TensorFlow's global RNG, which
    `keras.utils.set_random_seed` would make replayable; and it keeps the Python values
    it was built with, so accounting and configs read exactly what the user set
    (`l2_norm_clip`, `stddev`, `noise_multiplier`) instead of private attributes
    or float32 copies in the global state.

    The clip and the noise std of every release are these Python settings, the ones the
    accountant reads; the global state's float32 copies are only compared with them
    (`state_settings`), never used.

    Args:
      l2_norm_clip: the L2 bound of every record.
      stddev: the noise std on the sum.
      noise_multiplier: stddev / l2_norm_clip as the user gave it (default: the ratio).
        A value that disagrees with that ratio (relative tolerance 1e-6) is refused:
        the accountant would credit noise that is not drawn.
      floating_point_safe: False (the default): textbook float32 Gaussian noise, whose
        low-order bits can leak the sum. True: the sum is rounded onto a fine grid and
        discrete Gaussian noise is added there (`tfdp.randomness.grid`), accounted as the
        same Gaussian mechanism; about 8 times the cost of the textbook draw.
    """

    def __init__(self, l2_norm_clip: float, stddev: float,
                 noise_multiplier: Optional[float] = None, floating_point_safe: bool = False):
        l2_norm_clip = check_positive("l2_norm_clip", l2_norm_clip)
        stddev = check_non_negative("stddev", stddev)
        super().__init__(l2_norm_clip=l2_norm_clip, stddev=stddev)
        ratio = stddev / l2_norm_clip
        if noise_multiplier is None:
            noise_multiplier = ratio
        noise_multiplier = check_non_negative("noise_multiplier", noise_multiplier)
        if not settings_agree(noise_multiplier, ratio):
            raise ValueError(
                f"GaussianSumQuery: noise_multiplier={noise_multiplier:g} disagrees with the "
                f"noise it draws, stddev / l2_norm_clip = {stddev:g} / {l2_norm_clip:g} = "
                f"{ratio:g}; the accountant would credit noise that is not added. Leave "
                "noise_multiplier out (it is then the ratio), or pass stddev = "
                "noise_multiplier * l2_norm_clip.")
        self._settings = (l2_norm_clip, stddev, noise_multiplier)
        self._floating_point_safe = bool(floating_point_safe)

    @property
    def l2_norm_clip(self) -> float:
        """The L2 bound applied to every record."""
        return self._settings[0]

    @property
    def stddev(self) -> float:
        """Standard deviation of the Gaussian noise on the sum."""
        return self._settings[1]

    @property
    def noise_multiplier(self) -> float:
        """stddev over the clip."""
        return self._settings[2]

    @property
    def floating_point_safe(self) -> bool:
        """True when the noise is discrete Gaussian on a grid (`tfdp.randomness.grid`)."""
        return self._floating_point_safe

    def derive_sample_params(self, global_state):
        """Implements `DPQuery.derive_sample_params`: the Python clip, not the state's copy."""
        del global_state  # compared with the settings by `state_settings`, never used
        return tf.constant(self.l2_norm_clip, tf.float32)

    def state_settings(self, global_state) -> List[Tuple[str, tf.Tensor, float]]:
        """The clip and the noise std, as the global state holds them and as set."""
        return [("l2_norm_clip", global_state.l2_norm_clip, self.l2_norm_clip),
                ("stddev", global_state.stddev, self.stddev)]

    def get_noised_result_with_seed(self, sample_state, global_state, seed):
        """The clipped sum plus N(0, stddev^2) noise per coordinate, drawn from `seed`.

        The std is the Python setting (the accounted one), never the state's copy.
        """
        stddev = self.stddev
        if self._floating_point_safe and self.stddev > 0:
            result = noise_on_grid(sample_state, seed, clip=self.l2_norm_clip,
                                   noise_multiplier=self.stddev / self.l2_norm_clip, norm="l2")
        else:
            result = noise_each_leaf(
                sample_state, seed,
                lambda shape, dtype, leaf_seed: gaussian_noise(shape, stddev, leaf_seed, dtype))
        event = dp_accounting.GaussianDpEvent(self.noise_multiplier)
        return result, global_state, event

    def get_config(self) -> Dict[str, Any]:
        """The constructor arguments."""
        return {"l2_norm_clip": self.l2_norm_clip, "stddev": self.stddev,
                "noise_multiplier": self.noise_multiplier,
                "floating_point_safe": self._floating_point_safe}
