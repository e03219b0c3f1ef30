"""The randomness a DP guarantee counts as secret: the noise and the batch sampling.

An accountant's epsilon assumes that the adversary does not know the noise added to
each update nor which records each batch sampled. tfdp therefore never derives either
from a seed a user sets (`keras.utils.set_random_seed`, `--seed`, NumPy's or Python's),
nor stores anything that could replay them:

* `SecretKey`: 128 bits from the operating system's entropy (`os.urandom`), drawn when a
  DP optimizer is built (one per training run), held in memory in a variable that no
  checkpoint, `.keras` file or SavedModel tracks. Each private step takes its seed
  from the key, a per-process step counter and the ledger's step count
  (`stateless_fold_in`), so no two steps, variables, runs or processes share noise; a
  resumed process draws a new key. Stateless ops keyed this way also run inside XLA
  and on every replica of a `tf.distribute` strategy alike (the key and the counter are
  mirrored, so the replicas agree on the random schedule's coin).
* `os_entropy_seed()`: a fresh 128-bit seed from `os.urandom` each time the op runs, for
  input pipelines (`tfdp.data.poisson_batches`) that run on the host.

The generator that expands a step's seed into noise is TensorFlow's stateless Philox
(counter-based, 10 rounds): statistically strong, but not a cryptographic generator.
An adversary who could recover a step's Philox key from the released noisy update
could predict that step's noise; no such attack is known, and each step's key is
itself a fresh output of the secret key, never reused.

`insecure_reproducible_seed`, accepted wherever the secret randomness is used, replaces
the OS entropy by a seed: the noise and the batches become reproducible by anyone who
knows it, so the guarantee then holds only against an adversary who does not. It is
for research and tests, and every statement and record of such a run says so.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from typing import Optional

import numpy as np
import tensorflow as tf

INSECURE_NOTE = (
    "Randomness: the noise and the batch sampling were made reproducible from a seed "
    "(insecure_reproducible_seed), so the guarantee holds only against an adversary who "
    "does not know that seed."
)


class SecretRandomnessWarning(UserWarning):
    """A seed was given where tfdp's randomness is secret: says what it still reaches."""


def check_insecure_seed(seed) -> Optional[int]:
    """`insecure_reproducible_seed` as an int (or None); refuses anything else."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(
            f"`insecure_reproducible_seed` must be an integer or None, got {seed!r}.")
    return int(seed)


def warn_seed_ignored(where: str, what: str) -> None:
    """Warns that a `seed=` argument no longer reaches `what` (noise, coin or sampling)."""
    warnings.warn(
        f"{where}: `seed` no longer reaches {what}, which now come from secret randomness "
        "(the operating system's entropy) so that no seed can replay them. For research "
        "runs that must reproduce them, pass `insecure_reproducible_seed=` instead: the "
        "guarantee then holds only against someone who does not know that seed.",
        SecretRandomnessWarning, stacklevel=3)


def derive_seed(seed: int, purpose: str) -> np.ndarray:
    """A [2] int64 stateless seed derived from an insecure seed and a purpose name."""
    digest = hashlib.sha256(f"tfdp/{purpose}/{int(seed)}".encode()).digest()
    return np.frombuffer(digest[:16], dtype=np.int64).copy()


def _os_seed() -> np.ndarray:
    return np.frombuffer(os.urandom(16), dtype=np.int64).copy()


def os_entropy_seed() -> tf.Tensor:
    """A [2] int64 seed for `tf.random.stateless_*` ops, from `os.urandom` at each run of the op.

    A host op (`tf.numpy_function`): for input pipelines and eager code, not for XLA.
    """
    seed = tf.numpy_function(_os_seed, [], tf.int64, stateful=True, name="os_entropy_seed")
    seed.set_shape([2])
    return seed


class SecretKey:
    """The secret key of one training run's noise, in memory only.

    Deliberately not a `tf.Module` or other trackable object: no checkpoint, `.keras`
    file or SavedModel can see its variables. Build it in the scope of the
    `tf.distribute` strategy that trains (as the DP optimizer is built), so every
    replica holds the same key and counter.

    Args:
      purpose: the stream's name ("noise"); with an insecure seed, keys of different
        purposes differ.
      insecure_reproducible_seed: None (the default: 128 bits of OS entropy) or an
        integer that makes the stream reproducible, and the guarantee conditional on
        nobody knowing it.
    """

    def __init__(self, purpose: str, insecure_reproducible_seed: Optional[int] = None):
        self._insecure_seed = check_insecure_seed(insecure_reproducible_seed)
        key = (_os_seed() if self._insecure_seed is None
               else derive_seed(self._insecure_seed, purpose))
        with tf.init_scope():
            self._key = tf.Variable(key, trainable=False, name=f"secret_{purpose}_key",
                                    aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
            # Steps drawn by this process: two draws at the same ledger step (a retried
            # step, a second call in a custom loop) still get different seeds.
            self._draws = tf.Variable(np.int64(0), trainable=False, name=f"secret_{purpose}_draws",
                                      aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    @property
    def reproducible(self) -> bool:
        """True when the key comes from `insecure_reproducible_seed`, not from OS entropy."""
        return self._insecure_seed is not None

    @property
    def insecure_reproducible_seed(self) -> Optional[int]:
        """The insecure seed, or None for a secret key."""
        return self._insecure_seed

    def step_seed(self, ledger_step: tf.Tensor) -> tf.Tensor:
        """The [2] int64 seed of one private step, and advances the draw counter.

        `ledger_step` is the number of steps the privacy ledger holds before this one; it
        is folded in so that a reproducible run resumed from a checkpoint (a new process,
        its counter back at 0) does not repeat an earlier step's noise.
        """
        # The seed waits for nothing but the key and the counters (the noise can be drawn
        # while the step's gradients are computed); the counter advances with the step.
        with tf.control_dependencies(None):
            draw = self._draws.read_value()
            seed = tf.random.experimental.stateless_fold_in(self._key.read_value(), draw)
            seed = tf.random.experimental.stateless_fold_in(seed, tf.cast(ledger_step, tf.int64))
        with tf.control_dependencies([draw]):
            self._draws.assign_add(1)
        return seed

    def __repr__(self) -> str:  # never shows the key
        mode = "reproducible (insecure)" if self.reproducible else "secret"
        return f"<SecretKey {mode}>"
