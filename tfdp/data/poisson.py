"""Poisson-sampled training batches: the sampling the DP accountants assume.

Each step, every example joins the batch independently with probability
q = batch_size / num_examples, so batch sizes vary (Binomial(n, q)). Empty
batches are kept: skipping them would make the number of steps depend on the
data, which the accounting does not allow for.
"""

from __future__ import annotations

from typing import Any, Optional

import tensorflow as tf

from tfdp._validation import check_positive, check_positive_int
from tfdp.accounting.counting import steps_from_epochs


def poisson_batches(
    x: Any,
    y: Any = None,
    batch_size: float = None,
    *,
    num_steps: Optional[int] = None,
    epochs: Optional[float] = None,
    seed: Optional[int] = None,
) -> tf.data.Dataset:
    """A `tf.data.Dataset` of Poisson-sampled `(x, y)` batches (just `x` when y is None).

    Each pass over the returned dataset yields `num_steps` batches (or
    ceil(epochs * n / batch_size); one epoch's worth when neither is given),
    and each new pass draws fresh batches, so `model.fit(ds, epochs=E)` trains
    E epochs of independently sampled steps. With a `seed`, the sequence of
    passes is reproducible.

    Give the DP optimizer `expected_batch_size=batch_size` so it averages by the
    expected size (unbiased), and tell `compute_epsilon` / `PrivacyCallback`
    `sampling="poisson"` (their default).

    Args:
      x: features, an array/tensor (or a nest of them) with examples on axis 0.
      y: labels with the same first dimension, or None.
      batch_size: the expected batch size b, 0 < b <= n; q = b / n.
      num_steps: batches per pass over the dataset.
      epochs: alternatively, passes of data per pass over the dataset.
      seed: random seed (None: fresh entropy).

    Returns:
      The dataset; batch sizes vary and may be 0.

    Raises:
      ValueError: on bad sizes or when both `num_steps` and `epochs` are given.
    """
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
    if batch_size is None:
        raise ValueError("`batch_size` (the expected batch size, a number > 0) is required.")
    batch_size = check_positive("batch_size", batch_size)
    if batch_size > num_examples:
        raise ValueError(
            f"`batch_size` ({batch_size:g}) must not exceed the number of examples "
            f"({num_examples})."
        )
    if num_steps is not None and epochs is not None:
        raise ValueError("Give at most one of `num_steps` or `epochs` (default: one epoch).")
    if num_steps is not None:
        num_steps = check_positive_int("num_steps", num_steps)
    else:
        epochs = 1.0 if epochs is None else check_positive("epochs", epochs)
        num_steps = steps_from_epochs(epochs, num_examples, batch_size)
    if seed is not None:
        seed = int(seed)

    rate = batch_size / num_examples

    def sample(step_seed):
        # One independent Bernoulli(q) draw per example and step.
        chosen = tf.random.stateless_uniform([num_examples], seed=step_seed) < rate
        indices = tf.reshape(tf.where(chosen), [-1])
        return tf.nest.map_structure(lambda leaf: tf.gather(leaf, indices), data)

    # A fresh stream of step seeds on every pass (reproducible from `seed`).
    step_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    return (
        step_seeds.batch(2, drop_remainder=True)
        .take(num_steps)
        .map(sample, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .prefetch(tf.data.AUTOTUNE)
    )
