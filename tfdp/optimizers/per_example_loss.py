"""Turns a per-example loss into the per-unit (example or microbatch) losses DP clips."""

from __future__ import annotations

from typing import Optional, Tuple

import tensorflow as tf

SCALAR_LOSS_MESSAGE = (
    "DP training needs one loss per example, but the loss is a scalar (already averaged "
    "over the batch), so per-example gradients cannot be clipped. Build the loss with "
    "reduction=None, e.g. keras.losses.SparseCategoricalCrossentropy(from_logits=True, "
    "reduction=None)."
)


def per_unit_losses(
    loss: tf.Tensor, num_microbatches: Optional[int]
) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Returns `(unit_losses, num_units, batch_size)` for a per-example loss vector.

    With `num_microbatches=None` each example is a unit. Otherwise the batch is cut
    into `min(batch_size, num_microbatches)` contiguous microbatches whose sizes
    differ by at most one, so any batch size works (a last partial batch, a
    Poisson-sampled batch); each unit's loss is its examples' mean.
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
    num_units = tf.minimum(batch_size, num_microbatches)
    segment_ids = (tf.range(batch_size) * num_units) // tf.maximum(batch_size, 1)
    unit_losses = tf.math.unsorted_segment_mean(loss, segment_ids, num_units)
    return unit_losses, num_units, batch_size
