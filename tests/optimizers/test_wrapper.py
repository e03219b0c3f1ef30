"""tfdp.DPOptimizer around Keras 3 optimizer instances (issue #30, item 5).

The wrapper must clip and noise exactly as the DP classes do, whatever the inner optimizer
(AdamW, Lion, a learning-rate schedule, EMA, gradient accumulation, one already built), hand
the inner optimizer only the privatized gradients, keep the ledger itself, and round-trip
through `.keras` files with the inner optimizer's configuration and slots.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdp

CLIP = 0.1


def _data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 8)).astype("float32"), rng.integers(0, 2, n)


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, activation="tanh"),
                             keras.layers.Dense(2)])


def _loss(reduction=None):
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=reduction)


def _schedule():
    return keras.optimizers.schedules.ExponentialDecay(0.05, decay_steps=1, decay_rate=0.5)


INNERS = {
    "sgd-momentum": lambda: keras.optimizers.SGD(0.3, momentum=0.9),
    "adamw": lambda: keras.optimizers.AdamW(0.01, weight_decay=0.1),
    "lion": lambda: keras.optimizers.Lion(0.01),
    "adamw-schedule": lambda: keras.optimizers.AdamW(_schedule(), weight_decay=0.1),
    "lion-ema": lambda: keras.optimizers.Lion(0.01, use_ema=True, ema_momentum=0.5),
    "adam-accumulation": lambda: keras.optimizers.Adam(0.01, gradient_accumulation_steps=2),
}


def _brute_force_clipped_mean(reference, x, y):
    """mean_b min(1, C / ||g_b||) g_b, one example at a time (a Python loop)."""
    loss = _loss("sum_over_batch_size")
    total = [tf.zeros_like(v) for v in reference.trainable_variables]
    for b in range(len(x)):
        with tf.GradientTape() as tape:
            value = loss(y[b:b + 1], reference(x[b:b + 1]))
        grads = tape.gradient(value, reference.trainable_variables)
        scale = min(1.0, CLIP / float(tf.linalg.global_norm(grads)))
        total = [t + scale * g for t, g in zip(total, grads)]
    return [t / len(x) for t in total]


@pytest.mark.parametrize("name", list(INNERS))
def test_noiseless_steps_are_the_inner_updates_of_the_brute_force_clipped_means(name):
    # Two steps, so that a schedule, Adam's bias correction, EMA and accumulation all act:
    # the wrapper's model must end exactly where the inner optimizer takes the reference
    # model on the brute-force clipped means (then finalized, as fit does).
    x, y = _data()
    base = _model()
    reference = keras.models.clone_model(base)
    reference.set_weights(base.get_weights())
    optimizer = tfdp.DPOptimizer(INNERS[name](), l2_norm_clip=CLIP, noise_multiplier=0.0)
    model = tfdp.make_private(base)
    model.compile(optimizer=optimizer, loss=_loss())
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)

    inner = INNERS[name]()
    for start in (0, 8):  # each step's mean at the weights the step before left
        mean = _brute_force_clipped_mean(reference, x[start:start + 8], y[start:start + 8])
        inner.apply(mean, reference.trainable_variables)
    inner.finalize_variable_values(reference.trainable_variables)
    for got, want in zip(model.trainable_variables, reference.trainable_variables):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)
    # The ledger counts every private step, whatever the inner optimizer does with it.
    assert int(optimizer.iterations) == int(optimizer.noisy_steps) == 2
    for got, want in zip(optimizer.inner_optimizer.variables, inner.variables):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)


def _gradients_the_inner_optimizer_sees(inner, mechanism, clip, multiplier, units=2000):
    """One step whose loss has zero gradient: the inner optimizer gets noise / units."""
    seen = []
    apply = inner.apply

    def recording_apply(grads, trainable_variables=None):
        seen.append([np.asarray(g) for g in grads])
        return apply(grads, trainable_variables)

    inner.apply = recording_apply  # this test's probe of what the inner optimizer receives
    width = 100
    variable = tf.Variable(tf.zeros([width, width]))
    x = tf.zeros([units, width])
    kwargs = {"l2_norm_clip" if mechanism == "gaussian" else "l1_norm_clip": clip}
    optimizer = tfdp.DPOptimizer(inner, mechanism=mechanism, noise_multiplier=multiplier,
                                 **kwargs)
    optimizer.minimize(lambda: tf.reduce_sum(tf.matmul(x, variable), axis=1), [variable])
    (grads,) = seen
    return grads[0].ravel().astype(np.float64) * units


@pytest.mark.parametrize("make_inner", [lambda: keras.optimizers.AdamW(0.01),
                                        lambda: keras.optimizers.Lion(0.01)],
                         ids=["adamw", "lion"])
def test_the_inner_optimizer_receives_gaussian_and_laplace_noise_of_the_right_size(make_inner):
    noise = _gradients_the_inner_optimizer_sees(make_inner(), "gaussian", 2.0, 1.5)
    n, sigma = noise.size, 3.0
    assert abs(noise.std() / sigma - 1) < 5 / np.sqrt(2 * n)
    assert abs(noise.mean()) < 5 * sigma / np.sqrt(n)
    noise = _gradients_the_inner_optimizer_sees(make_inner(), "laplace", 2.0, 0.5)
    assert abs(np.abs(noise).mean() - 1.0) < 5 / np.sqrt(noise.size)


def test_gradients_that_skipped_the_query_reach_no_inner_optimizer():
    inner = keras.optimizers.AdamW(0.01)
    optimizer = tfdp.DPOptimizer(inner, l2_norm_clip=1.0, noise_multiplier=1.0)
    variable = keras.Variable(np.ones(3, np.float32))
    with pytest.raises(ValueError, match="did not go through the DP query"):
        optimizer.apply([tf.ones(3)], [variable])
    np.testing.assert_array_equal(variable.numpy(), np.ones(3))
    assert int(inner.iterations) == 0 and int(optimizer.iterations) == 0


def test_a_dropped_step_leaves_the_inner_optimizer_untouched():
    x, y = _data(20)
    model = tfdp.make_private(_model())
    inner = keras.optimizers.AdamW(0.1, use_ema=True)
    optimizer = tfdp.DPOptimizer(inner, noise_schedule="random", noise_probability=0.5,
                                 on_skip="drop", l2_norm_clip=1.0, noise_multiplier=0.5)
    model.compile(optimizer=optimizer, loss=_loss())
    model.fit(x, y, batch_size=20, epochs=12, verbose=0)
    applied, dropped = int(optimizer.iterations), int(optimizer.dropped_steps)
    assert applied + dropped == 12
    assert int(inner.iterations) == applied == int(optimizer.noisy_steps)


def test_a_built_instance_keeps_its_slots_and_the_plan_budget_counts_only_private_steps():
    x, y = _data(64)
    base = _model()
    inner = keras.optimizers.Adam(0.01)
    inner.build(base.trainable_variables)
    inner.apply([tf.ones_like(v) for v in base.trainable_variables], base.trainable_variables)
    moments = [v.numpy().copy() for v in inner.variables]
    plan = tfdp.PrivacyPlan(num_examples=64, batch_size=16, steps=3, l2_norm_clip=1.0,
                            noise_multiplier=1.0)
    optimizer = plan.optimizer(inner)
    assert optimizer.inner_optimizer is inner and optimizer.max_steps == 3
    assert int(optimizer.iterations) == 0  # the ledger starts here, not at the inner's count
    model = plan.make_private(base)
    model.compile(optimizer=optimizer, loss=_loss())
    model.fit(plan.batches(x, y), epochs=plan.fit_epochs, verbose=0,
              callbacks=[plan.callback(verbose=0)])
    assert int(optimizer.iterations) + int(optimizer.dropped_steps) == 3
    assert int(inner.iterations) == 1 + int(optimizer.iterations)
    assert not all(np.array_equal(a, b.numpy()) for a, b in zip(moments, inner.variables))
    with pytest.raises(ValueError, match="Configure the optimizer instance itself"):
        plan.optimizer(keras.optimizers.SGD(0.1), learning_rate=0.5)
    with pytest.raises(ValueError, match="not a DP optimizer"):
        plan.optimizer(optimizer)


def test_a_wrapper_round_trips_through_a_keras_file_with_its_inner_optimizer(tmp_path):
    x, y = _data()
    inner = keras.optimizers.AdamW(_schedule(), weight_decay=0.1, use_ema=True)
    optimizer = tfdp.DPOptimizer(inner, l2_norm_clip=1.0, noise_multiplier=0.5, max_steps=10)
    model = tfdp.make_private(_model())
    model.compile(optimizer=optimizer, loss=_loss())
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path).optimizer
    assert type(loaded) is tfdp.DPOptimizer
    assert isinstance(loaded.inner_optimizer, keras.optimizers.AdamW)
    assert isinstance(loaded.inner_optimizer._learning_rate,  # pylint: disable=protected-access
                      keras.optimizers.schedules.ExponentialDecay)
    assert loaded.use_ema and loaded.weight_decay == pytest.approx(0.1)
    assert loaded.max_steps == 10 and loaded.dp_settings["noise_multiplier"] == 0.5
    assert [v.shape for v in loaded.variables] == [v.shape for v in optimizer.variables]
    for a, b in zip(loaded.variables, optimizer.variables):
        if "dp_largest_batch_size" not in a.path:
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert loaded.learning_rate.numpy() == pytest.approx(0.05 * 0.5 ** 2)


def test_gradient_accumulation_never_reuses_a_noise_seed():
    # The inner optimizer's own `iterations` advances every second step under accumulation;
    # the wrapper's counter (which picks the step's noise seed) advances every step.
    optimizer = tfdp.DPOptimizer(keras.optimizers.SGD(1.0, gradient_accumulation_steps=2),
                                 l2_norm_clip=1.0, noise_multiplier=1.0)
    variable = tf.Variable(tf.zeros([50]))
    seen = []
    for _ in range(4):
        before = variable.numpy().copy()
        optimizer.minimize(lambda: tf.reduce_sum(variable * tf.zeros([3, 50]), axis=1),
                           [variable])
        seen.append(variable.numpy() - before)
    assert int(optimizer.iterations) == 4
    assert int(optimizer.inner_optimizer.iterations) == 2
    updates = [s for s in seen if np.any(s != 0)]
    assert len(updates) == 2 and not np.allclose(updates[0], updates[1])


def test_a_dp_or_loss_scale_optimizer_is_refused_as_the_inner_one():
    dp = tfdp.DPKerasSGDOptimizer(l2_norm_clip=1.0, noise_multiplier=1.0)
    with pytest.raises(ValueError, match="already a DP optimizer"):
        tfdp.DPOptimizer(dp, l2_norm_clip=1.0, noise_multiplier=1.0)
    with pytest.raises(ValueError, match="LossScaleOptimizer"):
        tfdp.DPOptimizer(keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD()),
                         l2_norm_clip=1.0, noise_multiplier=1.0)
    with pytest.raises(ValueError, match="Keras 3 optimizer instance"):
        tfdp.DPOptimizer(keras.optimizers.SGD, l2_norm_clip=1.0, noise_multiplier=1.0)
