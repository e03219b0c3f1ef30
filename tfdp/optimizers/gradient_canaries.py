"""Gradient canaries for the white-box one-run audit (`tfdp.attacks.one_run_audit`).

The auditor of Steinke, Nasr and Jagielski (2023, white-box setting) inserts canary
gradients and watches every model update. Here canary i is a Dirac gradient of norm
equal to the clip on coordinate i of an extra block of `num_canaries` coordinates. The
block is appended to each step's sum of clipped gradients and goes through the
optimizer's own `DPQuery.get_noised_result`, so it receives exactly the noise, the
random-schedule coin and the release/drop outcome the model's gradients receive. An
included canary joins a step with the batch's sampling rate, as a Poisson-sampled
example would. Real gradients never touch the block, so what the audit measures is
the mechanism as implemented (noise, schedule, sampling), not the model's clipping
(a canary's norm is the clip by construction).

The auditor's score of canary i is sum_t x_t[i] / s_t^2, where x_t is the noised block
at step t and s_t a robust estimate of its noise scale from the block itself (the
median absolute deviation over canaries): the linear likelihood-ratio statistic for a
shift of the clip in Gaussian noise of scale s_t. A step released without noise has
s_t ~ 0 and a weight near 1/floor, which is the point: such a step shows the canaries.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

# Relative floor of the noise scale (in units of the clip): keeps 1/s^2 finite on a
# step released without noise while letting it dominate every noisy step.
_SCALE_FLOOR = 1e-3
# MAD to standard deviation for a Gaussian.
_MAD_TO_STD = 1.482602218505602


class GradientCanaryBlock:
    """The canary coordinates one DP optimizer carries through its noise query.

    Args:
      included: bool array (num_canaries,): which canaries are in the training run.
      sampling_rate: probability that an included canary joins a step (the batch's
        expected size over the number of training examples).
      seed: seed of the per-step sampling of the canaries.
    """

    def __init__(self, included: Sequence[bool], sampling_rate: float, seed: Optional[int] = None):
        included = np.asarray(included)
        if included.ndim != 1 or included.size < 1 or included.dtype != bool:
            raise ValueError("gradient_canaries must be a 1-D boolean array (which canaries "
                             f"are included), got {included.dtype} of shape {included.shape}.")
        if not 0.0 < float(sampling_rate) <= 1.0:
            raise ValueError(f"The canaries' sampling rate must be in (0, 1], got {sampling_rate}.")
        self.num_canaries = int(included.size)
        self.sampling_rate = float(sampling_rate)
        with tf.init_scope():
            self._included = tf.constant(included.astype(np.float32))
            self._generator = (tf.random.Generator.from_seed(seed) if seed is not None
                               else tf.random.Generator.from_non_deterministic_state())
            self._scores = tf.Variable(tf.zeros([self.num_canaries], tf.float64),
                                       trainable=False, name="gradient_canary_scores")
            self._steps = tf.Variable(0, dtype=tf.int64, trainable=False,
                                      name="gradient_canary_steps")

    def sampled_block(self, clip: tf.Tensor) -> tf.Tensor:
        """This step's canary contributions: clip on each included canary that joins it."""
        joins = tf.cast(self._generator.uniform([self.num_canaries]) < self.sampling_rate,
                        tf.float32)
        return tf.cast(clip, tf.float32) * self._included * joins

    def record(self, noised_block: tf.Tensor, clip: tf.Tensor) -> tf.Operation:
        """Adds this step's weighted observation of every canary to its score."""
        x = tf.cast(noised_block, tf.float64)
        clip = tf.cast(clip, tf.float64)
        center = _median(x)
        scale = _MAD_TO_STD * _median(tf.abs(x - center))
        scale = tf.maximum(scale, _SCALE_FLOOR * clip)
        return tf.group(self._scores.assign_add(x / tf.square(scale)),
                        self._steps.assign_add(1))

    def scores(self) -> np.ndarray:
        """The auditor's score of every canary (higher: more likely included)."""
        return self._scores.numpy().copy()

    @property
    def steps(self) -> int:
        """Steps observed so far."""
        return int(self._steps.numpy())


def _median(x: tf.Tensor) -> tf.Tensor:
    """Median of a 1-D tensor (the mean of the two middle values for an even size)."""
    n = tf.shape(x)[0]
    ordered = tf.sort(x)
    return 0.5 * (ordered[(n - 1) // 2] + ordered[n // 2])
