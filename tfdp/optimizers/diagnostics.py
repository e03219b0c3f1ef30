"""Data-dependent counts of a DP optimizer, kept in memory only (never saved or exported)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf


class InMemoryCounters:
    """Exact counts that depend on the data: the largest realized batch, skipped examples.

    Released exactly, such counts are not covered by the DP guarantee, so no checkpoint,
    `.keras` file or SavedModel may hold them. Like `tfdp.randomness.SecretKey`, this is
    deliberately not a `tf.Module` or other trackable object, and its variables are plain
    `tf.Variable`s rather than optimizer variables: nothing that saves the optimizer sees
    them. Built in the `tf.distribute` strategy's scope (as the optimizer is), each is
    mirrored and written by the first replica only (the replicas hold the same values).
    They start at 0 in every process, hence `steps_in_this_process`: a restored optimizer
    has taken steps this process did not see.
    """

    def __init__(self):
        with tf.init_scope():
            self.largest_batch_size = self._counter("dp_largest_batch_size")
            self.skipped_examples = self._counter("dp_skipped_examples")
            self.steps_in_this_process = self._counter("dp_steps_in_this_process")

    @staticmethod
    def _counter(name: str) -> tf.Variable:
        return tf.Variable(np.int64(0), trainable=False, name=name,
                           aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    def record_step(self, batch_size: tf.Tensor, skipped: tf.Tensor) -> None:
        """Counts one private step of `batch_size` examples, `skipped` of them skipped."""
        self.steps_in_this_process.assign_add(1)
        self.largest_batch_size.assign(
            tf.maximum(self.largest_batch_size, tf.cast(batch_size, tf.int64)))
        self.skipped_examples.assign_add(tf.cast(skipped, tf.int64))

    def __repr__(self) -> str:
        return "<InMemoryCounters (not saved)>"
