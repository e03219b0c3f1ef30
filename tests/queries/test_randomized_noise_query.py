"""RandomizedNoiseQuery: the coin's frequency, release vs drop, events, counters, the seed."""

import dp_accounting
import numpy as np
import pytest
import tensorflow as tf
from tfdp._tf_privacy import gaussian_query

from tfdp.queries import (
    OUTCOME_DROPPED,
    OUTCOME_NOISY,
    OUTCOME_RELEASED,
    GaussianSumQuery,
    LaplaceSumQuery,
    RandomizedNoiseQuery,
)
from tfdp.randomness import SecretRandomnessWarning


def _gaussian(clip=1.0, multiplier=1.0):
    return gaussian_query.GaussianSumQuery(l2_norm_clip=clip, stddev=clip * multiplier)


def _run(query, steps, sample=None):
    """Runs `steps` releases of a fixed sample state; returns results, outcomes, events, state."""
    sample = sample if sample is not None else [tf.constant([1.0, 2.0, 3.0])]
    state = query.initial_global_state()
    results, outcomes, events = [], [], []
    for _ in range(steps):
        result, state, event = query.get_noised_result(sample, state)
        results.append(result[0].numpy())
        outcomes.append(int(query.last_outcome(state)))
        events.append(event)
    return results, outcomes, events, state


@pytest.mark.parametrize("p", [0.1, 0.5, 0.85])
def test_noisy_fraction_is_inside_a_binomial_interval_around_p(p):
    steps = 3000
    query = RandomizedNoiseQuery(_gaussian(), p)

    @tf.function
    def count_noisy():
        noisy = tf.constant(0, tf.int64)
        for step in tf.range(steps, dtype=tf.int64):
            seed = tf.random.experimental.stateless_fold_in(tf.constant([11, 0], tf.int64), step)
            noisy += tf.cast(query.draw_coin(seed), tf.int64)
        return noisy

    noisy = int(count_noisy())
    half_width = 4.5 * np.sqrt(steps * p * (1 - p))  # ~ a 99.999% interval
    assert abs(noisy - steps * p) < half_width


def test_release_returns_the_exact_sum_without_noise_and_a_non_private_event():
    sample = [tf.constant([1.0, 2.0, 3.0])]
    query = RandomizedNoiseQuery(_gaussian(multiplier=5.0), 0.5, on_skip="release")
    results, outcomes, events, state = _run(query, 60, sample)
    assert set(outcomes) == {OUTCOME_NOISY, OUTCOME_RELEASED}
    for result, outcome, event in zip(results, outcomes, events):
        if outcome == OUTCOME_RELEASED:
            np.testing.assert_array_equal(result, [1.0, 2.0, 3.0])
            assert event == dp_accounting.NonPrivateDpEvent()
        else:
            assert np.abs(result - [1.0, 2.0, 3.0]).max() > 0.01
            assert event == dp_accounting.GaussianDpEvent(5.0)
    assert int(state.noisy_count) == outcomes.count(OUTCOME_NOISY)
    assert int(state.released_count) == outcomes.count(OUTCOME_RELEASED)
    assert int(state.dropped_count) == 0


def test_drop_returns_zeros_a_no_op_event_and_counts_the_drops():
    query = RandomizedNoiseQuery(LaplaceSumQuery(1.0, 1.0), 0.4, on_skip="drop")
    results, outcomes, events, state = _run(query, 60)
    assert set(outcomes) == {OUTCOME_NOISY, OUTCOME_DROPPED}
    for result, outcome, event in zip(results, outcomes, events):
        if outcome == OUTCOME_DROPPED:
            assert np.all(result == 0)
            assert event == dp_accounting.NoOpDpEvent()
        else:
            assert event == dp_accounting.LaplaceDpEvent(1.0)
    assert int(state.dropped_count) == outcomes.count(OUTCOME_DROPPED)
    assert int(state.noisy_count) + int(state.dropped_count) == 60


def test_probability_one_is_always_noisy_and_zero_never():
    always = RandomizedNoiseQuery(_gaussian(), 1.0)
    never = RandomizedNoiseQuery(_gaussian(), 0.0)
    assert set(_run(always, 30)[1]) == {OUTCOME_NOISY}
    assert set(_run(never, 30)[1]) == {OUTCOME_RELEASED}


def _schedule(query, seeds):
    state = query.initial_global_state()
    outcomes = []
    for seed in seeds:
        _, state, _ = query.get_noised_result_with_seed(
            [tf.ones([3])], state, tf.constant([seed, 7], tf.int64))
        outcomes.append(int(query.last_outcome(state)))
    return outcomes


def test_the_schedule_and_noise_are_functions_of_the_step_seed_alone():
    query = RandomizedNoiseQuery(GaussianSumQuery(1.0, 1.0), 0.5)
    first = _schedule(query, range(40))
    assert first == _schedule(query, range(40))
    assert first != _schedule(query, range(100, 140))
    # Without a seed (the DPQuery protocol) every release draws fresh OS entropy, whatever
    # TensorFlow's global seed: reseeding replays neither the coin nor the noise.
    runs = []
    for _ in range(2):
        tf.random.set_seed(0)
        results, outcomes = _run(query, 40)[:2]
        runs.append((outcomes, np.concatenate(results)))
    assert runs[0][0] != runs[1][0]
    assert not np.array_equal(runs[0][1], runs[1][1])


def test_a_seed_argument_warns_that_it_no_longer_reaches_the_coin():
    with pytest.warns(SecretRandomnessWarning, match="insecure_reproducible_seed"):
        query = RandomizedNoiseQuery(GaussianSumQuery(1.0, 1.0), 0.5, seed=3)
    assert query.seed is None and "seed" not in query.get_config()


def test_inside_tf_function_the_event_is_the_conservative_bound():
    captured = {}
    # In a graph the Gaussian event holds a graph tensor, so compare the event kinds.
    for on_skip, expected in [
        ("release", dp_accounting.NonPrivateDpEvent),
        ("drop", dp_accounting.GaussianDpEvent),
    ]:
        query = RandomizedNoiseQuery(_gaussian(multiplier=2.0), 0.9, on_skip=on_skip)

        @tf.function
        def step(state):
            result, new_state, event = query.get_noised_result([tf.ones([2])], state)
            captured["event"] = event
            return result

        step(query.initial_global_state())
        assert type(captured["event"]) is expected


def test_clipping_is_the_inner_querys():
    query = RandomizedNoiseQuery(_gaussian(clip=0.5), 0.5)
    params = query.derive_sample_params(query.initial_global_state())
    clipped = query.preprocess_record(params, [tf.constant([30.0, 40.0])])
    np.testing.assert_allclose(clipped[0].numpy(), [0.3, 0.4], rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(noise_probability=1.5), "noise_probability"),
        (dict(noise_probability=-0.1), "noise_probability"),
        (dict(noise_probability=0.5, on_skip="skip"), "on_skip"),
        (dict(noise_probability=0.5, seed="x"), "seed"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        RandomizedNoiseQuery(_gaussian(), **kwargs)


def test_inner_query_must_be_a_sum_query():
    with pytest.raises(ValueError, match="inner_query"):
        RandomizedNoiseQuery(object(), 0.5)
