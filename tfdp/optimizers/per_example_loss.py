"""Turns a per-example loss into the per-unit (example or microbatch) losses DP clips."""

from __future__ import annotations

from typing import Optional, Tuple

import tensorflow as tf

from tfdp.randomness import os_entropy_seed

SCALAR_LOSS_MESSAGE = (
    "DP training needs one loss per example, but the loss is a scalar (already averaged "
    "over the batch), so per-example gradients cannot be clipped. Build the loss with "
    "reduction=None, e.g. keras.losses.SparseCategoricalCrossentropy(from_logits=True, "
    "reduction=None)."
)


def random_microbatch_ids(batch_size: tf.Tensor, num_microbatches: int,
                          seed: tf.Tensor) -> tf.Tensor:
    """[batch_size] int32: each example's microbatch, i.i.d. uniform on [0, num_microbatches).

    Drawn from a secret stateless `seed`, never from the examples' positions or values:
    cutting a batch by position lets one added example shift every boundary (and so
    every microbatch), while a data-independent assignment confines it to its own one.
    """
    return tf.random.stateless_uniform(
        tf.reshape(batch_size, [1]), seed=seed, minval=0, maxval=num_microbatches,
        dtype=tf.int32)


def microbatch_means(loss: tf.Tensor, microbatch_ids: tf.Tensor,
                     num_microbatches: int) -> tf.Tensor:
    """[num_microbatches] mean loss of each microbatch; an empty microbatch's loss is 0.

    For a fixed assignment, adding or removing one example changes only its own
    microbatch's mean, so the sum of clipped microbatch gradients moves by at most
    twice the clip (the sensitivity the accountant uses under microbatching).
    """
    return tf.math.unsorted_segment_mean(loss, microbatch_ids, num_microbatches)


def per_unit_losses(
    loss: tf.Tensor, num_microbatches: Optional[int], seed: Optional[tf.Tensor] = None
) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Returns `(unit_losses, num_units, batch_size)` for a per-example loss vector.

    With `num_microbatches=None` each example is a unit. Otherwise there are always
    `num_microbatches` units (some possibly empty, contributing zero), whatever the
    batch size: every example joins one of them uniformly at random
    (`random_microbatch_ids`), drawn from `seed`, a [2] int64 stateless seed that must
    be secret (the DP optimizer's `microbatch_seed()`; default: fresh OS entropy, not
    usable under XLA). Each unit's loss is its examples' mean. As the assignment does
    not depend on the data, one example moves one unit's clipped gradient by at most
    twice the clip: the guarantee holds for every fixed assignment, hence for their
    random mixture.
    """
    loss = tf.convert_to_tensor(loss)
    if loss.shape.rank == 0:
        raise ValueError(SCALAR_LOSS_MESSAGE)
    if loss.shape.rank is not None and loss.shape.rank > 1:
        # e.g. a loss per example and time step: each example's mean is its loss.
        loss = tf.reduce_mean(loss, axis=list(range(1, loss.shape.rank)))
    batch_size = tf.shape(loss)[0]
    if num_microbatches is None:
        return loss, batch_size, batch_size
    seed = os_entropy_seed() if seed is None else seed
    ids = random_microbatch_ids(batch_size, num_microbatches, seed)
    unit_losses = microbatch_means(loss, ids, num_microbatches)
    # Data-independent: the update is divided by num_microbatches, never by a realized count.
    return unit_losses, tf.constant(num_microbatches, tf.int32), batch_size
