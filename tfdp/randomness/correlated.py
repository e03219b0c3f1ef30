"""Correlated (banded matrix-factorization) noise: w_t = (C^{-1} z)_t, one step at a time.

For a b-banded lower-triangular Toeplitz strategy C (coefficients c_0..c_{b-1}, see
`tfdp.mechanisms.banded`), the noise of step t solves
    c_0 w_t = z_t - sum_{i=1}^{b-1} c_i w_{t-i},
a recurrence over the last b-1 outputs. `BandedNoise` keeps those outputs, per variable,
in a [b-1, *shape] buffer (shifted one slot per step: b-1 model-sized reads and writes)
and draws z_t from the step's secret seed exactly as the Gaussian query does (one
`split_seeds` seed per variable, `gaussian_noise`), never from a global RNG.

The buffers and the step counter are in memory only. Like `SecretKey`, `BandedNoise` is
deliberately not a `tf.Module` or other trackable object, so no checkpoint, `.keras` file
or SavedModel sees its variables; the optimizer must hold it in a plain Python attribute
(not a Keras-tracked list or dict of variables). A resumed run therefore restarts the
recurrence (`reset()` does the same in-process): C becomes block-diagonal, each block the
same b-banded Toeplitz strategy, still with columns of norm <= 1, so the accounting holds;
its noise comes from the new process's key (and the ledger step), so it repeats nothing.
"""

from __future__ import annotations

from typing import List, Sequence

import numpy as np
import tensorflow as tf

from tfdp.randomness.noise import gaussian_noise, split_seeds


def _normalized(coefficients) -> np.ndarray:
    coef = np.asarray(coefficients, dtype=np.float64)
    if coef.ndim != 1 or coef.size < 1 or not np.all(np.isfinite(coef)) or coef[0] <= 0:
        raise ValueError(
            "BandedNoise needs the strategy's coefficients c_0..c_{b-1}: a 1-D array of "
            f"finite numbers with c_0 > 0; got {coefficients!r}.")
    return coef / np.linalg.norm(coef)


class BandedNoise:
    """The streaming noise C^{-1} z of a banded Toeplitz strategy, for a list of variables.

    Args:
      coefficients: c_0..c_{b-1} of the strategy; normalized here to L2 norm 1 (largest
        column norm 1), the sensitivity the accountant assumes. A z of std
        noise_multiplier * clip then gives the accounted mechanism.
      shapes: one fully defined shape per noised tensor (e.g. `[v.shape for v in
        model.trainable_variables]`).
      dtype: the buffers' and the noise's float dtype (float32).
      name: prefix of the buffer variables' names.

    Build it where the optimizer's variables are built (in a `tf.distribute` strategy's
    scope: the buffers are then mirrored, updated from the first replica, and every
    replica, drawing from the same mirrored seed, adds the same noise).
    """

    def __init__(self, coefficients, shapes: Sequence, *, dtype: tf.DType = tf.float32,
                 name: str = "banded_noise"):
        self._coef = _normalized(coefficients)
        self._dtype = tf.as_dtype(dtype)
        self._shapes = [tf.TensorShape(shape) for shape in shapes]
        for shape in self._shapes:
            if not shape.is_fully_defined():
                raise ValueError(f"BandedNoise needs fully defined shapes, got {shape}.")
        with tf.init_scope():
            # Past outputs, newest first: buffer[i - 1] holds w_{t-i}. Zeros before step 0.
            self._buffers = [
                tf.Variable(tf.zeros([self.bands - 1, *shape], self._dtype), trainable=False,
                            name=f"{name}_{i}", aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
                for i, shape in enumerate(self._shapes)] if self.bands > 1 else []
            self._steps = tf.Variable(np.int64(0), trainable=False, name=f"{name}_steps",
                                      aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    @property
    def coefficients(self) -> np.ndarray:
        """The normalized coefficients c_0..c_{b-1} (a copy)."""
        return self._coef.copy()

    @property
    def bands(self) -> int:
        """b, the number of nonzero diagonals of C."""
        return int(self._coef.size)

    @property
    def steps(self) -> tf.Variable:
        """Steps drawn since the recurrence (re)started."""
        return self._steps

    def next_noise(self, z_list: Sequence[tf.Tensor]) -> List[tf.Tensor]:
        """w_t for each variable from its z_t, and remembers w_t for the next b-1 steps.

        Works eagerly and inside `tf.function`; one call is one step of the recurrence.
        """
        if len(z_list) != len(self._shapes):
            raise ValueError(
                f"BandedNoise holds {len(self._shapes)} variables, got {len(z_list)} draws.")
        c0 = tf.constant(self._coef[0], self._dtype)
        noises = []
        for index, z in enumerate(z_list):
            z = tf.cast(tf.convert_to_tensor(z), self._dtype)
            z.shape.assert_is_compatible_with(self._shapes[index])
            if self.bands == 1:
                noises.append(z / c0)
                continue
            buffer = self._buffers[index]
            past = buffer.read_value()
            inner = tf.tensordot(tf.constant(self._coef[1:], self._dtype), past, axes=1)
            noise = (z - inner) / c0
            # Newest first: drop the oldest (w_{t-b+1}, no longer needed), prepend w_t.
            buffer.assign(tf.concat([noise[None], past[:-1]], axis=0))
            noises.append(noise)
        self._steps.assign_add(1)
        return noises

    def draw(self, seed: tf.Tensor, stddev: float) -> List[tf.Tensor]:
        """One step's correlated noise: z ~ N(0, stddev^2) per variable from `seed`, then w.

        `seed` is the step's [2] int64 seed from the secret key
        (`SecretKey.step_seed(ledger_step)`); each variable gets its own `split_seeds`
        seed, as `tfdp.queries.seeded.noise_each_leaf` gives the Gaussian query's leaves.
        """
        seeds = split_seeds(seed, max(len(self._shapes), 1))
        z_list = [gaussian_noise(shape, stddev, seeds[i], self._dtype)
                  for i, shape in enumerate(self._shapes)]
        return self.next_noise(z_list)

    def reset(self) -> None:
        """Restarts the recurrence: the next step is computed as step 0 (zero history)."""
        for buffer in self._buffers:
            buffer.assign(tf.zeros_like(buffer))
        self._steps.assign(0)

    def __repr__(self) -> str:
        return f"<BandedNoise bands={self.bands} variables={len(self._shapes)}>"
