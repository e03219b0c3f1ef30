"""Cyclic Poisson sampling's core for banded DP-MF: folds per example, a Poisson mask per step.

Each example is assigned to one of b folds independently and uniformly at random; step t
Poisson-samples fold (t mod b), every example of that fold joining independently with
probability q = batch_size * b / num_examples (the expected batch is batch_size). An example
therefore takes part at most once every b steps, which a b-banded strategy needs.

An example's fold is a keyed hash of (fold key, example index) alone (BLAKE2b), never of
the data's size or of other examples: adding or removing an example moves no other
example's fold, the add-or-remove-one adjacency the accounting assumes (an equal,
position-based split would move many). The key is 128 bits of OS entropy, held in memory
by the run (`fold_key()`); `insecure_reproducible_seed` makes it a function of a seed, as
everywhere in tfdp (the guarantee then holds only against someone who does not know it).
Each step's Poisson draw takes a fresh stateless seed (in a pipeline, `os_entropy_seed()`,
as `tfdp.data.poisson_batches` does).
"""

from __future__ import annotations

import hashlib
import math
import os
from typing import Any, Optional

import numpy as np
import tensorflow as tf

from tfdp._validation import check_positive, check_positive_int
from tfdp.randomness import check_insecure_seed, derive_seed, os_entropy_seed

__all__ = ["fold_key", "cyclic_poisson_folds", "cyclic_sampling_probability",
           "cyclic_poisson_mask", "cyclic_poisson_batches", "cyclic_steps_per_epoch"]


def fold_key(insecure_reproducible_seed: Optional[int] = None) -> bytes:
    """The 16-byte key of a run's fold assignment: OS entropy, or derived from an insecure seed."""
    seed = check_insecure_seed(insecure_reproducible_seed)
    if seed is None:
        return os.urandom(16)
    return derive_seed(seed, "cyclic_poisson_folds").tobytes()


def _key_bytes(key) -> bytes:
    """`key` as bytes: bytes as given, or the raw bytes of an integer array (a [2] int64 seed)."""
    if isinstance(key, (bytes, bytearray)):
        data = bytes(key)
    else:
        array = np.asarray(key)
        if array.dtype.kind not in "iu" or array.size < 1:
            raise ValueError(
                "`key` is the fold key: bytes (fold_key()) or an integer array such as a "
                f"[2] int64 seed; got {key!r}.")
        data = array.astype(np.int64).tobytes()
    if not 8 <= len(data) <= 64:
        raise ValueError(f"`key` must hold 8 to 64 bytes (16 from fold_key()); got {len(data)}.")
    return data


def cyclic_poisson_folds(num_examples: int, bands: int, key) -> np.ndarray:
    """Each example's fold in {0, ..., bands - 1}: a keyed hash of (key, index), uniform.

    fold_i = floor(H_key(i) * b / 2^64) with H the first 8 bytes of BLAKE2b keyed by `key`
    over the index; the bias from 2^64 not being a multiple of b is below b / 2^64.
    Folds for n + 1 examples extend those for n (the test of add-or-remove adjacency).

    Args:
      num_examples: n.
      bands: b, the number of folds (the strategy's bands).
      key: the run's fold key (`fold_key()`), bytes or an integer array.

    Returns:
      int64 array of shape (n,).
    """
    num_examples = check_positive_int("num_examples", num_examples)
    bands = check_positive_int("bands", bands)
    secret = _key_bytes(key)
    words = np.fromiter(
        (int.from_bytes(hashlib.blake2b(i.to_bytes(8, "little"), digest_size=8,
                                        key=secret, person=b"tfdp-folds").digest(), "little")
         for i in range(num_examples)),
        dtype=np.uint64, count=num_examples)
    # floor(h * b / 2^64) exactly, from the high and low 32-bit halves of h.
    high, low = words >> np.uint64(32), words & np.uint64(0xFFFFFFFF)
    b = np.uint64(bands)
    return ((high * b + ((low * b) >> np.uint64(32))) >> np.uint64(32)).astype(np.int64)


def cyclic_sampling_probability(num_examples: int, batch_size: float, bands: int) -> float:
    """q = batch_size * bands / num_examples, refused (ValueError) when it would exceed 1."""
    num_examples = check_positive_int("num_examples", num_examples)
    batch_size = check_positive("batch_size", batch_size)
    bands = check_positive_int("bands", bands)
    if batch_size * bands > num_examples:
        raise ValueError(
            f"Cyclic Poisson sampling with {bands} bands samples each step from one fold of "
            f"about num_examples / bands = {num_examples / bands:g} examples, fewer than the "
            f"expected batch size {batch_size:g} (batch_size * bands = {batch_size * bands:g} "
            f"> num_examples = {num_examples}). Use at most "
            f"{max(1, int(num_examples // batch_size))} bands, or a smaller batch size.")
    return batch_size * bands / num_examples


def cyclic_poisson_mask(folds, step, bands: int, sampling_probability: float,
                        step_seed) -> tf.Tensor:
    """Step `step`'s batch as a [n] bool mask: fold (step mod bands), each member with prob. q.

    Args:
      folds: [n] int folds (`cyclic_poisson_folds`).
      step: the step's index t (a Python int or a scalar tensor).
      bands: b.
      sampling_probability: q (`cyclic_sampling_probability`).
      step_seed: a [2] int64 stateless seed, fresh each step (`os_entropy_seed()`).
    """
    bands = check_positive_int("bands", bands)
    folds = tf.convert_to_tensor(folds, tf.int64)
    fold = tf.math.floormod(tf.cast(step, tf.int64), bands)
    coins = tf.random.stateless_uniform(tf.shape(folds), seed=step_seed, dtype=tf.float64)
    return tf.logical_and(tf.equal(folds, fold), coins < float(sampling_probability))


def cyclic_steps_per_epoch(num_examples: int, batch_size: float, bands: int) -> int:
    """Steps of one epoch under cyclic Poisson sampling: ceil(n / B) rounded up to a multiple of b.

    A whole number of cycles per epoch keeps step t's fold (t mod b) continuing across
    epochs, passes of a dataset and resumed runs (which restart at an epoch boundary).
    """
    steps = max(1, math.ceil(check_positive_int("num_examples", num_examples)
                             / check_positive("batch_size", batch_size)))
    bands = check_positive_int("bands", bands)
    return bands * math.ceil(steps / bands)


def cyclic_poisson_batches(
    x: Any,
    y: Any = None,
    batch_size: float = None,
    bands: int = None,
    *,
    num_steps: Optional[int] = None,
    first_step: int = 0,
    key: Optional[bytes] = None,
    insecure_reproducible_seed: Optional[int] = None,
) -> tf.data.Dataset:
    """A `tf.data.Dataset` of cyclic-Poisson-sampled `(x, y)` batches, for mechanism="banded_mf".

    Each example gets a fold in {0..b-1} from a keyed hash of its index (`fold_key`: 128
    bits of OS entropy, in memory only, one per call); step t takes fold t mod b, each of
    its examples independently with probability q = batch_size * b / n, so the expected
    batch is `batch_size` and an example takes part at most once every b steps.

    Args:
      x, y: features and labels (arrays or nests of them), examples on axis 0.
      batch_size: the expected batch size B (refused when B * b > n).
      bands: b, the DP optimizer's bands.
      num_steps: steps per pass; default one epoch, `cyclic_steps_per_epoch(n, B, b)`.
        Must be a multiple of b, so that a second pass continues the cycle.
      first_step: the index t of the first step: the optimizer's ledger step when a run
        resumes (a multiple of b), so that step t samples fold t mod b.
      key: the fold key (`fold_key()`); default a fresh one. Keep it secret.
      insecure_reproducible_seed: for research and tests only: the folds and the batches
        from this seed (the guarantee then holds only against someone who does not know it).

    Returns:
      The dataset, tagged (`SamplingTag.bands` = b): `fit`, `compute_epsilon(batches=...)`
      and `PrivacyCallback` check it against the optimizer's mechanism and bands.
    """
    from tfdp.data.poisson import _check_data  # pylint: disable=import-outside-toplevel
    from tfdp.data.sampling_tag import SamplingTag, tag_dataset  # pylint: disable=import-outside-toplevel

    data, num_examples = _check_data(x, y)
    if batch_size is None or bands is None:
        raise ValueError("cyclic_poisson_batches needs `batch_size` (the expected batch size) "
                         "and `bands` (the DP optimizer's bands), e.g. bands=4.")
    bands = check_positive_int("bands", bands)
    rate = cyclic_sampling_probability(num_examples, batch_size, bands)  # refuses B * b > n
    steps = (cyclic_steps_per_epoch(num_examples, batch_size, bands) if num_steps is None
             else check_positive_int("num_steps", num_steps))
    if steps % bands:
        raise ValueError(
            f"num_steps={steps} is not a multiple of bands={bands}: a second pass would "
            "restart the folds' cycle mid-way and sample one fold twice within b steps. Use "
            f"num_steps={bands * math.ceil(steps / bands)}.")
    first_step = int(first_step)
    if first_step < 0 or first_step % bands:
        raise ValueError(f"first_step={first_step} must be a multiple of bands={bands} (a "
                         "resumed run restarts at an epoch boundary): the optimizer's ledger step.")
    insecure_seed = check_insecure_seed(insecure_reproducible_seed)
    if key is None:
        key = fold_key(insecure_seed)
    folds = tf.constant(cyclic_poisson_folds(num_examples, bands, key))

    def sample(step, step_seed):
        chosen = cyclic_poisson_mask(folds, step, bands, rate, step_seed)
        indices = tf.reshape(tf.where(chosen), [-1])
        return tf.nest.map_structure(lambda leaf: tf.gather(leaf, indices), data)

    indices = tf.data.Dataset.range(first_step, first_step + steps)
    if insecure_seed is None:
        seeds = indices.map(lambda _: os_entropy_seed())
    else:
        op_seed = int(derive_seed(insecure_seed, "cyclic_sampling")[0])
        seeds = (tf.data.Dataset.random(seed=op_seed, rerandomize_each_iteration=True)
                 .batch(2, drop_remainder=True).take(steps))
    dataset = (tf.data.Dataset.zip(indices, seeds)
               .map(sample, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
               .prefetch(tf.data.AUTOTUNE))
    return tag_dataset(dataset, SamplingTag(num_examples, batch_size, False, steps,
                                            insecure_seed is None, bands=bands))
