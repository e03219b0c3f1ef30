"""Poisson-sampled training batches: the sampling the DP accountants assume.

Each step, every example joins the batch independently with probability
q = batch_size / num_examples, so batch sizes vary (Binomial(n, q)). Empty
batches are kept: skipping them would make the number of steps depend on the
data, which the accounting does not allow for.

With `groups` (e.g. patient ids), the privacy unit is the group instead: each
step every group joins with probability q = batch_size / num_groups and brings
its examples (all of them, or a fresh random subset of at most
`max_examples_per_group`), laid out as a [groups, slots] block with weights.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np
import tensorflow as tf

from tfdp._validation import check_positive, check_positive_int
from tfdp.accounting.counting import steps_from_epochs
from tfdp.data.groups import count_groups, group_codes
from tfdp.data.sampling_tag import SamplingTag, tag_dataset
from tfdp.randomness import check_insecure_seed, derive_seed, os_entropy_seed, warn_seed_ignored

__all__ = ["poisson_batches", "count_groups"]


def poisson_batches(
    x: Any,
    y: Any = None,
    batch_size: float = None,
    *,
    num_steps: Optional[int] = None,
    epochs: Optional[float] = None,
    seed: Optional[int] = None,
    groups: Any = None,
    max_examples_per_group: Optional[int] = None,
    insecure_reproducible_seed: Optional[int] = None,
) -> tf.data.Dataset:
    """A `tf.data.Dataset` of Poisson-sampled `(x, y)` batches (just `x` when y is None).

    Each pass over the returned dataset yields `num_steps` batches (or
    ceil(epochs * n / batch_size); one epoch's worth when neither is given),
    and each new pass draws fresh batches, so `model.fit(ds, epochs=E)` trains
    E epochs of independently sampled steps.

    Which examples a batch holds is part of what the guarantee keeps secret (the
    accountant's amplification by subsampling assumes nobody knows it), so every step
    draws its sample from the operating system's entropy: no seed, no
    `keras.utils.set_random_seed` and no saved iterator replays the batches.

    Give the DP optimizer `expected_batch_size=batch_size` so it averages by the
    expected size (unbiased), and tell `compute_epsilon` / `PrivacyCallback`
    `sampling="poisson"` (their default).

    With `groups` (one id per example, e.g. patient ids; G distinct ids) the
    privacy unit is the group: `batch_size` is the expected number of GROUPS per
    batch (q = batch_size / G), `epochs` count passes over the groups, and each
    element is `(x_b, y_b, w_b)` with shapes [U, S, ...], [U, S, ...] and [U, S]:
    U sampled groups (may be 0) by S slots, S static (the largest group, or
    min(max_examples_per_group, largest group)). A group with n_g' = min(n_g, S)
    taken examples fills its first n_g' slots with weight S / n_g' and pads the
    rest with zeros of weight 0, so the slot mean of w * loss is the group's mean loss.

    Args:
      x: features, an array/tensor (or a nest of them) with examples on axis 0.
      y: labels with the same first dimension, or None (required with `groups`).
      batch_size: the expected batch size b, 0 < b <= n; q = b / n. With
        `groups`: the expected number of groups, 0 < b <= G; q = b / G.
      num_steps: batches per pass over the dataset.
      epochs: alternatively, passes of data (of groups, with `groups`) per pass.
      seed: no longer used (a warning says so); see `insecure_reproducible_seed`.
      groups: optional 1-D ids (ints or strings), one per example.
      max_examples_per_group: with `groups`, take at most this many examples of
        a sampled group, a uniformly random subset drawn afresh each step.
      insecure_reproducible_seed: for research and tests only: draw the batches from
        this seed, reproducibly, instead of from secret randomness. Anyone who knows
        the seed then knows every batch, and the guarantee holds only against
        someone who does not (say so with `compute_epsilon(...,
        secret_randomness=False)`).

    Returns:
      The dataset; batch sizes vary and may be 0. It carries a `SamplingTag`
      (`tfdp.data.sampling_tag(ds)`): a `make_private` model's `fit` checks the DP
      optimizer and `PrivacyCallback` against it.

    Raises:
      ValueError: on bad sizes or when both `num_steps` and `epochs` are given.
    """
    data, num_examples = _check_data(x, y)
    if batch_size is None:
        raise ValueError("`batch_size` (the expected batch size, a number > 0) is required.")
    batch_size = check_positive("batch_size", batch_size)
    if seed is not None:
        warn_seed_ignored("poisson_batches", "the batches")
    insecure_seed = check_insecure_seed(insecure_reproducible_seed)
    if groups is None:
        if max_examples_per_group is not None:
            raise ValueError(
                "`max_examples_per_group` caps the examples of a group; give `groups` too "
                "(one id per example), or drop it."
            )
        _check_rate(batch_size, num_examples, "examples")
        steps = _check_steps(num_steps, epochs, num_examples, batch_size)
        dataset = _pipeline(_example_sampler(data, num_examples, batch_size / num_examples),
                            steps, insecure_seed)
        return tag_dataset(dataset, SamplingTag(num_examples, batch_size, False, steps,
                                                insecure_seed is None))
    if y is None:
        raise ValueError(
            "`y` is required with `groups`: grouped batches are (x, y, sample_weight) triples."
        )
    layout = _GroupLayout(groups, num_examples, max_examples_per_group)
    _check_rate(batch_size, layout.num_groups, "groups")
    steps = _check_steps(num_steps, epochs, layout.num_groups, batch_size)
    dataset = _pipeline(_group_sampler(data, layout, batch_size / layout.num_groups), steps,
                        insecure_seed)
    return tag_dataset(dataset, SamplingTag(layout.num_groups, batch_size, True, steps,
                                            insecure_seed is None))


def _check_data(x: Any, y: Any) -> Tuple[Any, int]:
    """(x) or (x, y) as a nest of tensors, and the number of examples they share."""
    features = tf.nest.map_structure(tf.convert_to_tensor, x)
    leaves = tf.nest.flatten(features)
    if not leaves or leaves[0].shape.rank is None or leaves[0].shape.rank < 1:
        raise ValueError("`x` must hold at least one array with examples on axis 0.")
    num_examples = int(leaves[0].shape[0])
    if num_examples < 1:
        raise ValueError("`x` has no examples; Poisson sampling needs at least one.")
    data = features if y is None else (features, tf.nest.map_structure(tf.convert_to_tensor, y))
    for leaf in tf.nest.flatten(data):
        if leaf.shape.rank is None or leaf.shape.rank < 1 or int(leaf.shape[0]) != num_examples:
            raise ValueError(
                f"Every array in `x` and `y` needs {num_examples} examples on axis 0; got "
                f"shape {leaf.shape}."
            )
    return data, num_examples


def _check_rate(batch_size: float, population: int, unit: str) -> None:
    if batch_size > population:
        what = " is the expected number of groups per batch and" if unit == "groups" else ""
        raise ValueError(
            f"`batch_size` ({batch_size:g}){what} must not exceed the number of {unit} "
            f"({population})."
        )


def _check_steps(num_steps: Optional[int], epochs: Optional[float], population: int,
                 batch_size: float) -> int:
    """Steps per pass: `num_steps`, or the accountant's count for `epochs` (default 1)."""
    if num_steps is not None and epochs is not None:
        raise ValueError("Give at most one of `num_steps` or `epochs` (default: one epoch).")
    if num_steps is not None:
        return check_positive_int("num_steps", num_steps)
    epochs = 1.0 if epochs is None else check_positive("epochs", epochs)
    return steps_from_epochs(epochs, population, batch_size)


def _pipeline(sample, num_steps: int, insecure_seed: Optional[int]) -> tf.data.Dataset:
    if insecure_seed is None:
        # Each step's seed straight from the OS's entropy, drawn when the step is sampled.
        step_seeds = tf.data.Dataset.range(num_steps).map(lambda _: os_entropy_seed())
    else:
        # Reproducible: a fresh stream of step seeds on every pass, a function of the seed.
        op_seed = int(derive_seed(insecure_seed, "sampling")[0])
        step_seeds = (tf.data.Dataset.random(seed=op_seed, rerandomize_each_iteration=True)
                      .batch(2, drop_remainder=True).take(num_steps))
    return (
        step_seeds
        .map(sample, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .prefetch(tf.data.AUTOTUNE)
    )


def _example_sampler(data: Any, num_examples: int, rate: float):
    def sample(step_seed):
        # One independent Bernoulli(q) draw per example and step.
        chosen = tf.random.stateless_uniform([num_examples], seed=step_seed) < rate
        indices = tf.reshape(tf.where(chosen), [-1])
        return tf.nest.map_structure(lambda leaf: tf.gather(leaf, indices), data)

    return sample


class _GroupLayout:
    """The examples of each group as a padded index matrix [G, L] (pad -1) with sizes [G]."""

    def __init__(self, groups: Any, num_examples: int, max_examples_per_group: Optional[int]):
        ids = np.asarray(groups)
        if ids.ndim == 1 and len(ids) != num_examples:
            raise ValueError(
                f"`groups` has {len(ids)} ids but `x` has {num_examples} examples; give one "
                "id per example."
            )
        if max_examples_per_group is not None:
            max_examples_per_group = check_positive_int(
                "max_examples_per_group", max_examples_per_group)
        codes, self.num_groups = group_codes(ids)  # refuses ids that are not 1-D
        self.sizes = np.bincount(codes, minlength=self.num_groups).astype(np.int64)
        self.longest = int(self.sizes.max())
        self.slots = (self.longest if max_examples_per_group is None
                      else min(max_examples_per_group, self.longest))
        # Example indices sorted by group; an example's column is its rank within its group.
        order = np.argsort(codes, kind="stable")
        starts = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])
        columns = np.arange(num_examples) - starts[codes[order]]
        self.index = np.full((self.num_groups, self.longest), -1, np.int64)
        self.index[codes[order], columns] = order

    @property
    def capped(self) -> bool:
        """True when some group has more examples than slots (a subset is drawn)."""
        return self.slots < self.longest


def _group_sampler(data: Any, layout: _GroupLayout, rate: float):
    index = tf.constant(layout.index)
    sizes = tf.constant(layout.sizes)
    num_groups, slots = layout.num_groups, layout.slots

    def sample(step_seed):
        group_seed, slot_seed = tf.unstack(
            tf.random.experimental.stateless_split(step_seed, num=2))
        # One independent Bernoulli(q) draw per group and step.
        chosen = tf.random.stateless_uniform([num_groups], seed=group_seed) < rate
        rows = tf.reshape(tf.where(chosen), [-1])
        taken = tf.gather(index, rows)  # [U, L], -1 past each group's size
        if layout.capped:
            taken = _random_columns(taken, slots, slot_seed)
        valid = taken >= 0  # [U, S]
        safe = tf.where(valid, taken, tf.zeros_like(taken))  # pads gather example 0, then zeroed
        count = tf.minimum(tf.gather(sizes, rows), slots)
        weight = tf.cast(slots, tf.float32) / tf.cast(count, tf.float32)
        weights = tf.where(valid, weight[:, None], 0.0)

        def gather(leaf):
            rows_of_leaf = tf.gather(leaf, safe)  # [U, S, ...]
            mask = tf.reshape(valid, tf.concat(
                [tf.shape(valid), tf.ones([leaf.shape.rank - 1], tf.int32)], 0))
            return tf.where(mask, rows_of_leaf, tf.zeros_like(rows_of_leaf))

        features, labels = tf.nest.map_structure(gather, data)
        return features, labels, weights

    return sample


def _random_columns(taken: tf.Tensor, slots: int, seed: tf.Tensor) -> tf.Tensor:
    """Per row, a uniformly random subset of min(size, slots) real entries, padded with -1."""
    keys = tf.random.stateless_uniform(tf.shape(taken), seed=seed)
    # Pads sort last, so a row with at most `slots` entries keeps them all.
    keys = tf.where(taken >= 0, keys, np.inf)
    columns = tf.argsort(keys, axis=1)[:, :slots]
    return tf.gather(taken, columns, batch_dims=1)
