"""Microbatches are drawn at random from the secret key, not cut by position (issue #29, 1).

One added example must move the sum of clipped microbatch gradients by at most twice the
clip (the sensitivity the accountant halves the noise multiplier for).
"""

import itertools

import numpy as np
import pytest
import tensorflow as tf

import tfdp
from tfdp.optimizers.clipping import clip_and_sum
from tfdp.optimizers.per_example_loss import microbatch_means, random_microbatch_ids

CLIP, M = 1.0, 2


def _clipped_sum_of_one_step(gradients, seed, num_microbatches=M):
    """The noiseless clipped sum of one optimizer step whose examples' gradients are given."""
    w = tf.Variable([0.0])
    g = tf.constant(gradients, tf.float32)
    optimizer = tfdp.DPKerasSGDOptimizer(
        learning_rate=1.0, l2_norm_clip=CLIP, noise_multiplier=0.0,
        num_microbatches=num_microbatches, insecure_reproducible_seed=seed)
    # Example i's loss is g_i * w: its gradient is g_i.
    optimizer.minimize(lambda: g * w[0], [w])
    return -float(w.numpy()[0]) * num_microbatches  # the update is the clipped sum / M


def test_an_example_added_to_the_batch_moves_the_clipped_sum_by_at_most_twice_the_clip():
    # Position cutting puts the 3rd example in the first microbatch once a 5th arrives:
    # sums +2 and -2 (a change of 4 * clip); the random assignment keeps it at 2 * clip.
    batch = [150.0, -100.0, -200.0, 250.0]
    changes = []
    for seed in range(16):
        # The coupling of the guarantee: the old examples keep their microbatches.
        step = tfdp.DPKerasSGDOptimizer(l2_norm_clip=CLIP, noise_multiplier=0.0,
                                        num_microbatches=M, insecure_reproducible_seed=seed)
        ids = random_microbatch_ids(5, M, step.microbatch_seed()).numpy()
        again = tfdp.DPKerasSGDOptimizer(l2_norm_clip=CLIP, noise_multiplier=0.0,
                                         num_microbatches=M, insecure_reproducible_seed=seed)
        np.testing.assert_array_equal(random_microbatch_ids(4, M, again.microbatch_seed()), ids[:4])
        before = _clipped_sum_of_one_step(batch, seed)
        after = _clipped_sum_of_one_step(batch + [-1000.0], seed)
        changes.append(abs(after - before))
    assert max(changes) <= 2 * CLIP * (1 + 1e-6)
    assert max(changes) > 1.0  # the example does move its microbatch


@pytest.mark.parametrize("batch", [[150.0, 150.0, -200.0, 50.0, 50.0],
                                   [150.0, -100.0, -200.0, 250.0]])
def test_for_every_fixed_assignment_one_example_moves_the_sum_by_at_most_twice_the_clip(batch):
    # The random assignment is a data-independent mixture of fixed ones: each must hold.
    w = tf.Variable([0.0])
    query = tfdp.queries.GaussianSumQuery(CLIP, 0.0)
    worst = 0.0
    for ids in itertools.product(range(M), repeat=len(batch) + 1):
        sums = []
        for gradients, assignment in ((batch, ids[1:]), ([-1000.0] + batch, ids)):
            with tf.GradientTape() as tape:
                losses = tf.constant(gradients) * w[0]
                units = microbatch_means(losses, tf.constant(assignment, tf.int32), M)
            jacobian = tape.jacobian(units, [w])
            sums.append(float(clip_and_sum(query, CLIP, jacobian)[0].numpy()[0]))
        worst = max(worst, abs(sums[1] - sums[0]))
    assert worst == pytest.approx(2 * CLIP, rel=1e-6)


def test_the_update_is_always_divided_by_the_number_of_microbatches():
    # One example with M = 4: three empty microbatches contribute zero, the divisor stays 4
    # (dividing by a realized count of non-empty microbatches would depend on the data).
    w = tf.Variable([0.0])
    optimizer = tfdp.DPKerasSGDOptimizer(learning_rate=1.0, l2_norm_clip=CLIP,
                                         noise_multiplier=0.0, num_microbatches=4)
    optimizer.minimize(lambda: tf.constant([5.0]) * w[0], [w])
    assert float(w.numpy()[0]) == pytest.approx(-CLIP / 4, rel=1e-6)


def test_the_assignment_is_not_a_cut_by_position_and_changes_every_step():
    optimizer = tfdp.DPKerasSGDOptimizer(l2_norm_clip=CLIP, noise_multiplier=1.0,
                                         num_microbatches=3, insecure_reproducible_seed=0)
    draws = np.stack([random_microbatch_ids(60, 3, optimizer.microbatch_seed()).numpy()
                      for _ in range(20)])
    assert len({tuple(d) for d in draws}) == 20
    counts = np.bincount(draws.ravel(), minlength=3) / draws.size
    np.testing.assert_allclose(counts, 1 / 3, atol=0.05)
    # Whatever their position, examples land in every microbatch equally often.
    first, last = draws[:, :20].ravel(), draws[:, -20:].ravel()
    assert abs(first.mean() - last.mean()) < 0.25
