"""LaplaceSumQuery: L1 clipping of nested records, Laplace noise statistics, its event."""

import dp_accounting
import numpy as np
import pytest
import tensorflow as tf

from tfdp.queries import LaplaceSumQuery


def _l1(record):
    return sum(float(np.abs(np.asarray(t)).sum()) for t in tf.nest.flatten(record))


def test_every_clipped_record_is_inside_the_l1_ball_and_keeps_its_direction():
    query = LaplaceSumQuery(l1_norm_clip=2.0, noise_multiplier=1.0)
    params = query.derive_sample_params(query.initial_global_state())
    rng = np.random.default_rng(0)
    for scale in [0.001, 0.1, 1.0, 10.0, 1000.0]:
        record = {
            "w": tf.constant(rng.normal(size=(3, 4)) * scale, tf.float32),
            "b": [tf.constant(rng.normal(size=(5,)) * scale, tf.float32)],
        }
        clipped = query.preprocess_record(params, record)
        norm_before = _l1(record)
        assert _l1(clipped) <= 2.0 * (1 + 1e-5)
        expected_factor = min(1.0, 2.0 / norm_before)
        for before, after in zip(tf.nest.flatten(record), tf.nest.flatten(clipped)):
            np.testing.assert_allclose(after.numpy(), before.numpy() * expected_factor, rtol=1e-5)


def test_zero_record_stays_zero():
    query = LaplaceSumQuery(l1_norm_clip=1.0, noise_multiplier=1.0)
    params = query.derive_sample_params(query.initial_global_state())
    clipped = query.preprocess_record(params, [tf.zeros([7])])
    assert np.all(clipped[0].numpy() == 0)


def test_noise_is_laplace_with_scale_multiplier_times_clip():
    clip, multiplier, n = 3.0, 0.7, 400_000
    scale = clip * multiplier
    query = LaplaceSumQuery(l1_norm_clip=clip, noise_multiplier=multiplier)
    tf.random.set_seed(7)
    noised, _, _ = query.get_noised_result([tf.zeros([n])], query.initial_global_state())
    noise = noised[0].numpy().astype(np.float64)
    # |X| ~ Exponential(scale): mean scale, std scale; 5 standard errors of tolerance.
    assert abs(np.abs(noise).mean() - scale) < 5 * scale / np.sqrt(n)
    assert abs(noise.mean()) < 5 * np.sqrt(2) * scale / np.sqrt(n)
    # E[X^2] / E[|X|]^2 is 2 for Laplace (pi/2 ~ 1.57 for a Gaussian): the shape, not just the scale.
    ratio = (noise**2).mean() / np.abs(noise).mean() ** 2
    assert abs(ratio - 2.0) < 0.05


def test_sum_of_records_through_the_dpquery_interface():
    query = LaplaceSumQuery(l1_norm_clip=1.0, noise_multiplier=0.0)
    records = [[tf.constant([3.0, -1.0])], [tf.constant([0.25, 0.25])]]
    global_state = query.initial_global_state()
    params = query.derive_sample_params(global_state)
    sample_state = query.initial_sample_state(records[0])
    for record in records:
        sample_state = query.accumulate_record(params, sample_state, record)
    result, _, event = query.get_noised_result(sample_state, global_state)
    np.testing.assert_allclose(result[0].numpy(), [0.75 + 0.25, -0.25 + 0.25], rtol=1e-6)
    assert event == dp_accounting.LaplaceDpEvent(0.0)


def test_event_is_laplace_with_the_noise_multiplier():
    query = LaplaceSumQuery(l1_norm_clip=2.0, noise_multiplier=1.5)
    _, _, event = query.get_noised_result([tf.zeros([2])], query.initial_global_state())
    assert event == dp_accounting.LaplaceDpEvent(1.5)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(l1_norm_clip=0.0, noise_multiplier=1.0), "l1_norm_clip"),
        (dict(l1_norm_clip=-1.0, noise_multiplier=1.0), "l1_norm_clip"),
        (dict(l1_norm_clip=1.0, noise_multiplier=-0.1), "noise_multiplier"),
        (dict(l1_norm_clip=float("nan"), noise_multiplier=1.0), "l1_norm_clip"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        LaplaceSumQuery(**kwargs)
