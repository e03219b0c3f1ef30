"""One source of truth for a query's clip and noise: its Python settings (issue #29, item 3).

The accountant reads the settings; the noise and the clip must be the same numbers, and a
restored state holding others is refused.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdp
from tfdp.queries import GaussianSumQuery, LaplaceSumQuery, RandomizedNoiseQuery

SEED = tf.constant([3, 4], tf.int64)
N = 200_000


def test_a_noise_multiplier_that_disagrees_with_the_noise_is_refused():
    # Accounted as 5.0 while drawing std 0.1: epsilon ~0.8 reported where ~3,100 is true.
    stated = tfdp.compute_epsilon(1000, 100, 5.0, steps=100).epsilon
    true = tfdp.compute_epsilon(1000, 100, 0.1, steps=100).epsilon
    assert stated < 1.0 and true > 1000.0
    with pytest.raises(ValueError, match="disagrees with the noise it draws"):
        GaussianSumQuery(1.0, 0.1, noise_multiplier=5.0)
    with pytest.raises(ValueError, match="disagrees"):
        tfdp.DPKerasSGDOptimizer(dp_sum_query=GaussianSumQuery(1.0, 0.1, noise_multiplier=5.0))
    # Agreement up to float rounding is accepted, and the ratio is the default.
    assert GaussianSumQuery(0.3, 0.3 * 1.1, noise_multiplier=1.1).noise_multiplier == 1.1
    assert GaussianSumQuery(2.0, 3.0).noise_multiplier == 1.5


def _noise_std(query, state):
    zeros = tf.zeros([N])
    noised, _, _ = query.get_noised_result_with_seed(zeros, state, SEED)
    return float(np.std(noised.numpy()))


def test_gaussian_noise_and_clip_follow_the_settings_not_the_state():
    query = GaussianSumQuery(2.0, 3.0)
    other = query.initial_global_state()._replace(l2_norm_clip=tf.constant(20.0),
                                                  stddev=tf.constant(0.03))
    assert _noise_std(query, other) == pytest.approx(3.0, rel=0.01)
    assert float(query.derive_sample_params(other)) == 2.0


def test_laplace_noise_and_clip_follow_the_settings_not_the_state():
    query = LaplaceSumQuery(l1_norm_clip=2.0, noise_multiplier=0.5)
    other = query.initial_global_state()._replace(l1_norm_clip=tf.constant(20.0),
                                                  noise_scale=tf.constant(0.01))
    # Laplace(b) has std b * sqrt(2); b = 0.5 * 2.0.
    assert _noise_std(query, other) == pytest.approx(np.sqrt(2.0), rel=0.01)
    assert float(query.derive_sample_params(other)) == 2.0


def test_the_random_schedule_reports_its_inner_querys_settings():
    query = RandomizedNoiseQuery(GaussianSumQuery(2.0, 3.0), 1.0)
    state = query.initial_global_state()
    settings = {name: (float(leaf), value) for name, leaf, value in query.state_settings(state)}
    assert settings == {"l2_norm_clip": (2.0, 2.0), "stddev": (3.0, 3.0)}
    other = state._replace(inner_state=state.inner_state._replace(stddev=tf.constant(0.03)))
    assert _noise_std(query, other) == pytest.approx(3.0, rel=0.01)


def _restored_into_other_settings(optimizer):
    """Overwrites the query state as a checkpoint saved with 10x less noise would."""
    state = optimizer._query_state_variables
    inner = getattr(state, "inner_state", state)
    noise = inner.stddev if hasattr(inner, "stddev") else inner.noise_scale
    noise.assign(noise.numpy() / 10)


@pytest.mark.parametrize("kwargs", [
    dict(l2_norm_clip=1.0, noise_multiplier=1.0),
    dict(mechanism="laplace", l1_norm_clip=1.0, noise_multiplier=1.0),
    dict(l2_norm_clip=1.0, noise_multiplier=1.0, noise_schedule="random",
         noise_probability=0.5, on_skip="drop"),
])
def test_an_optimizer_refuses_to_step_on_a_state_restored_with_other_settings(kwargs):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    before = [v.numpy() for v in model.trainable_variables]
    private = tfdp.make_private(model)
    optimizer = tfdp.DPKerasSGDOptimizer(learning_rate=1.0, **kwargs)
    private.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction=None))
    _restored_into_other_settings(optimizer)
    x, y = np.ones((4, 3), np.float32), np.zeros(4, np.int64)
    with pytest.raises(tf.errors.InvalidArgumentError, match="settings of that checkpoint"):
        private.fit(x, y, batch_size=4, verbose=0)
    for b, v in zip(before, model.trainable_variables):
        np.testing.assert_array_equal(b, v.numpy())
    assert int(optimizer.noisy_steps.numpy()) == 0
    # A custom loop (eager) gets a ValueError naming the setting.
    w = tf.Variable([0.0])
    with pytest.raises(ValueError, match=r"(stddev|noise_scale) = 0\.1.*built with"):
        optimizer.minimize(lambda: tf.constant([1.0, 2.0]) * w[0], [w])
    assert float(w.numpy()[0]) == 0.0


def test_loading_optimizer_variables_saved_with_other_settings_is_refused():
    saved = tfdp.DPKerasSGDOptimizer(l2_norm_clip=1.0, noise_multiplier=0.1)
    store = {str(i): v.numpy() for i, v in enumerate(saved.variables)}
    same = tfdp.DPKerasSGDOptimizer(l2_norm_clip=1.0, noise_multiplier=0.1)
    same.load_own_variables(store)
    other = tfdp.DPKerasSGDOptimizer(l2_norm_clip=1.0, noise_multiplier=5.0)
    with pytest.raises(ValueError, match="stddev = 0.1.*built with stddev = 5"):
        other.load_own_variables(store)
