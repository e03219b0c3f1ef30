"""DP Keras optimizers: exact clipping against a per-example reference, noise statistics,
counters, dropped steps, Keras fit/compile/save, configs and bad input."""

import numpy as np
import pytest
import keras
import tensorflow as tf
from tfdp._tf_privacy import gaussian_query

import tfdp
from tfdp.optimizers.per_example_loss import random_microbatch_ids
from tfdp.queries import LaplaceSumQuery, RandomizedNoiseQuery

LOSS_NONE = None


def _data(n=24, features=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype("float32") * 3
    y = rng.integers(0, classes, size=n)
    return x, y


def _model(features=6, classes=3, hidden=8, seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((features,)),
            keras.layers.Dense(hidden, activation="tanh"),
            keras.layers.Dense(classes),
        ]
    )


def _int(variable):
    return int(np.asarray(variable))


def _per_example_loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=LOSS_NONE)


def _reference_update(model, x, y, norm, clip, units=None, ids=None):
    """Mean of clipped per-unit gradients, computed one unit at a time in NumPy.

    With `units` microbatches, example i belongs to microbatch `ids[i]`; empty ones count.
    """
    loss_fn = _per_example_loss()
    n = len(x)
    groups = [[i] for i in range(n)]
    if units is not None:
        groups = [list(np.flatnonzero(ids == j)) for j in range(units)]
    total = [np.zeros(v.shape, np.float64) for v in model.trainable_variables]
    for group in groups:
        if not group:
            continue  # an empty microbatch contributes zero
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(loss_fn(y[group], model(x[group])))
        grads = [g.numpy().astype(np.float64) for g in tape.gradient(loss, model.trainable_variables)]
        if norm == "l2":
            size = np.sqrt(sum((g**2).sum() for g in grads))
        else:
            size = sum(np.abs(g).sum() for g in grads)
        factor = min(1.0, clip / size)
        total = [t + g * factor for t, g in zip(total, grads)]
    return [t / len(groups) for t in total]


@pytest.mark.parametrize(
    "kwargs, norm, units",
    [
        (dict(mechanism="gaussian", l2_norm_clip=0.3), "l2", None),
        (dict(mechanism="laplace", l1_norm_clip=0.5), "l1", None),
        (dict(mechanism="gaussian", l2_norm_clip=0.3, num_microbatches=5,
              insecure_reproducible_seed=2), "l2", 5),  # 24 % 5 != 0
        (dict(mechanism="gaussian", noise_schedule="random", noise_probability=0.5,
              l2_norm_clip=0.3, insecure_reproducible_seed=1), "l2", None),
    ],
)
def test_noiseless_update_equals_the_mean_of_clipped_per_unit_gradients(kwargs, norm, units):
    x, y = _data()
    model = _model()
    before = [v.numpy() for v in model.trainable_variables]
    clip = kwargs.get("l2_norm_clip", kwargs.get("l1_norm_clip"))
    ids = None
    if units is not None:
        # The first step's random assignment, from a twin optimizer with the same insecure seed.
        twin = tfdp.DPKerasSGDOptimizer(noise_multiplier=0.0, **kwargs)
        ids = random_microbatch_ids(len(x), units, twin.microbatch_seed()).numpy()
        assert len(set(ids)) > 1
    expected = _reference_update(model, x, y, norm, clip, units, ids)
    optimizer = tfdp.DPKerasSGDOptimizer(learning_rate=1.0, noise_multiplier=0.0, **kwargs)
    private = tfdp.make_private(model)
    private.compile(optimizer=optimizer, loss=_per_example_loss())
    private.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    for b, v, e in zip(before, model.trainable_variables, expected):
        np.testing.assert_allclose(b - v.numpy(), e, rtol=2e-4, atol=1e-6)


def test_update_of_a_batch_with_huge_gradients_is_bounded_by_the_clip():
    x, y = _data(n=16)
    model = _model()
    before = [v.numpy() for v in model.trainable_variables]
    optimizer = tfdp.DPKerasSGDOptimizer(learning_rate=1.0, l2_norm_clip=0.1, noise_multiplier=0.0)
    private = tfdp.make_private(model)
    private.compile(optimizer=optimizer, loss=_per_example_loss())
    private.fit(x * 1000, y, batch_size=16, epochs=1, verbose=0)
    step = np.sqrt(sum(((b - v.numpy()) ** 2).sum() for b, v in zip(before, model.trainable_variables)))
    assert step <= 0.1 * (1 + 1e-5)


def _noise_of_one_step(mechanism, clip, multiplier, units=2000, safe=False):
    """Runs one step whose loss has zero gradient, so the update is noise / batch size."""
    width = 100
    variable = tf.Variable(tf.zeros([width, width]))
    x = tf.zeros([units, width])
    kwargs = {"l2_norm_clip" if mechanism == "gaussian" else "l1_norm_clip": clip}
    optimizer = tfdp.DPKerasSGDOptimizer(
        learning_rate=1.0, mechanism=mechanism, noise_multiplier=multiplier,
        floating_point_safe_noise=safe, **kwargs
    )
    # The per-example loss depends on the variable only through x = 0: zero gradients.
    optimizer.minimize(lambda: tf.reduce_sum(tf.matmul(x, variable), axis=1), [variable])
    return -variable.numpy().ravel().astype(np.float64) * units


@pytest.mark.parametrize("safe", [False, True], ids=["float", "grid"])
def test_gaussian_noise_has_std_multiplier_times_clip(safe):
    noise = _noise_of_one_step("gaussian", clip=2.0, multiplier=1.5, safe=safe)
    n, sigma = noise.size, 3.0
    # The sample std's relative standard error is 1/sqrt(2n); 5 of them.
    assert abs(noise.std() / sigma - 1) < 5 / np.sqrt(2 * n)
    assert abs(noise.mean()) < 5 * sigma / np.sqrt(n)


@pytest.mark.parametrize("safe", [False, True], ids=["float", "grid"])
def test_laplace_noise_has_scale_multiplier_times_clip(safe):
    noise = _noise_of_one_step("laplace", clip=2.0, multiplier=0.5, safe=safe)
    n, scale = noise.size, 1.0
    assert abs(np.abs(noise).mean() - scale) < 5 * scale / np.sqrt(n)
    assert abs((noise**2).mean() / np.abs(noise).mean() ** 2 - 2.0) < 0.15


def test_counters_follow_the_schedule_and_any_batch_size_works():
    x, y = _data(n=53)  # 53 = 5 batches of 10 + a partial batch of 3
    for kwargs in [
        dict(),
        dict(noise_schedule="random", noise_probability=0.5, on_skip="release",
             insecure_reproducible_seed=3),
        dict(noise_schedule="random", noise_probability=0.5, on_skip="drop",
             insecure_reproducible_seed=3),
    ]:
        model = _model()
        optimizer = tfdp.DPKerasSGDOptimizer(
            learning_rate=0.1, l2_norm_clip=1.0, noise_multiplier=1.0, **kwargs
        )
        private = tfdp.make_private(model)
        private.compile(optimizer=optimizer, loss=_per_example_loss())
        private.fit(x, y, batch_size=10, epochs=4, verbose=0)
        total_steps = 4 * 6
        applied, noisy, dropped = (
            _int(optimizer.iterations), _int(optimizer.noisy_steps), _int(optimizer.dropped_steps)
        )
        assert applied + dropped == total_steps
        assert _int(optimizer.largest_batch_size) == 10
        if not kwargs:
            assert noisy == applied == total_steps and dropped == 0
        elif kwargs["on_skip"] == "release":
            assert dropped == 0 and 0 < noisy < applied
        else:
            assert noisy == applied and 0 < dropped < total_steps
        # The query's own ledger agrees with the optimizer's counters.
        state = optimizer.query_global_state()
        if kwargs:
            assert int(state.noisy_count) == noisy
            assert int(state.dropped_count) == dropped


def _all_variables(model, optimizer):
    return [v.numpy().copy() for v in model.variables] + [
        v.numpy().copy() for v in optimizer.variables if "dp_" not in v.name
    ]


def test_a_dropped_step_leaves_every_variable_bit_identical():
    x, y = _data(n=20)
    model = _model()
    optimizer = tfdp.DPKerasAdamOptimizer(
        learning_rate=0.1, noise_schedule="random", noise_probability=0.5, on_skip="drop",
        l2_norm_clip=1.0, noise_multiplier=0.5, insecure_reproducible_seed=7,
    )
    loss_fn = _per_example_loss()

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        optimizer.minimize(loss, model.trainable_variables, tape=tape)

    step(x, y)  # creates Adam's slots
    outcomes = []
    for _ in range(12):
        before = _all_variables(model, optimizer)
        dropped_before = _int(optimizer.dropped_steps)
        step(x, y)
        after = _all_variables(model, optimizer)
        dropped = _int(optimizer.dropped_steps) > dropped_before
        identical = all(np.array_equal(b, a) for b, a in zip(before, after))
        outcomes.append(dropped)
        assert identical == dropped
    assert any(outcomes) and not all(outcomes)


def test_loss_falls_under_moderate_noise():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    model = tfdp.make_private(keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10)]
    ))
    optimizer = tfdp.DPKerasSGDOptimizer(learning_rate=0.5, l2_norm_clip=1.0, noise_multiplier=1.0)
    model.compile(optimizer=optimizer, loss=_per_example_loss(), metrics=["accuracy"])
    history = model.fit(x, y, batch_size=64, epochs=4, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.7 * losses[0]
    assert history.history["accuracy"][-1] > 0.5  # chance is 0.1


def test_a_scalar_loss_is_refused_with_the_reduction_advice():
    x, y = _data()
    model = tfdp.make_private(_model())
    model.compile(
        optimizer=tfdp.DPKerasSGDOptimizer(l2_norm_clip=1.0, noise_multiplier=1.0),
        loss=keras.losses.SparseCategoricalCrossentropy(),  # batch mean: one loss per batch
    )
    with pytest.raises(ValueError, match="reduction=None"):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)


def test_gradients_that_skipped_the_query_are_refused():
    variable = tf.Variable([1.0])
    optimizer = tfdp.DPKerasSGDOptimizer(l2_norm_clip=1.0, noise_multiplier=1.0)
    with pytest.raises(ValueError, match="did not go through the DP query"):
        optimizer.apply_gradients([(tf.constant([1.0]), variable)])


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(l2_norm_clip=0.0, noise_multiplier=1.0), "l2_norm_clip"),
        (dict(l2_norm_clip=-1.0, noise_multiplier=1.0), "l2_norm_clip"),
        (dict(l2_norm_clip=1.0, noise_multiplier=-1.0), "noise_multiplier"),
        (dict(l2_norm_clip=1.0), "noise_multiplier"),
        (dict(l2_norm_clip=1.0, noise_multiplier=1.0, noise_schedule="random",
              noise_probability=1.5), "noise_probability"),
        (dict(l2_norm_clip=1.0, noise_multiplier=1.0, noise_schedule="random",
              noise_probability=-0.5), "noise_probability"),
        (dict(l2_norm_clip=1.0, noise_multiplier=1.0, noise_probability=0.5), "noise_probability"),
        (dict(l2_norm_clip=1.0, noise_multiplier=1.0, mechanism="exponential"), "mechanism"),
        (dict(l2_norm_clip=1.0, noise_multiplier=1.0, noise_schedule="sometimes"), "noise_schedule"),
        (dict(l2_norm_clip=1.0, noise_multiplier=1.0, noise_schedule="random",
              noise_probability=0.5, on_skip="ignore"), "on_skip"),
        (dict(mechanism="laplace", l2_norm_clip=1.0, noise_multiplier=1.0), "l2_norm_clip"),
        (dict(mechanism="laplace", noise_multiplier=1.0), "l1_norm_clip"),
        (dict(mechanism="gaussian", l1_norm_clip=1.0, noise_multiplier=1.0), "l1_norm_clip"),
        (dict(l2_norm_clip=1.0, noise_multiplier=1.0, num_microbatches=0), "num_microbatches"),
        (dict(dp_sum_query=gaussian_query.GaussianSumQuery(1.0, 1.0), noise_multiplier=2.0),
         "either"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        tfdp.DPKerasSGDOptimizer(**kwargs)


def test_a_plain_model_compiled_with_a_dp_optimizer_is_refused_at_the_first_step():
    x, y = _data()
    model = _model()
    before = [v.numpy() for v in model.trainable_variables]
    model.compile(optimizer=tfdp.DPKerasSGDOptimizer(l2_norm_clip=1.0, noise_multiplier=1.0),
                  loss=_per_example_loss())
    with pytest.raises(ValueError, match="make_private"):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    for b, v in zip(before, model.trainable_variables):  # nothing trained without clipping
        np.testing.assert_array_equal(b, v.numpy())


def test_a_class_that_is_not_a_keras_3_optimizer_is_refused():
    with pytest.raises(ValueError, match="Keras 3 optimizer"):
        tfdp.make_dp_keras_optimizer_class(tf.Module)


def test_any_keras_3_optimizer_class_becomes_a_dp_optimizer():
    cls = tfdp.make_dp_keras_optimizer_class(keras.optimizers.RMSprop)
    assert cls.__name__ == "DPKerasRMSpropOptimizer"
    optimizer = cls(learning_rate=1.0, l2_norm_clip=0.3, noise_multiplier=0.0)
    # A DPOptimizer around a new RMSprop, which does the update.
    assert isinstance(optimizer, tfdp.DPOptimizer)
    assert isinstance(optimizer.inner_optimizer, keras.optimizers.RMSprop)
    x, y = _data()
    private = tfdp.make_private(_model())
    private.compile(optimizer=optimizer, loss=_per_example_loss())
    private.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert _int(optimizer.noisy_steps) == _int(optimizer.iterations) == 3


@pytest.mark.parametrize(
    "cls, kwargs",
    [
        (tfdp.DPKerasSGDOptimizer, dict(learning_rate=0.3, momentum=0.5, mechanism="laplace",
                                        l1_norm_clip=2.0, noise_multiplier=0.7)),
        (tfdp.DPKerasAdamOptimizer, dict(learning_rate=0.01, noise_schedule="random",
                                         noise_probability=0.3, on_skip="drop", l2_norm_clip=1.0,
                                         noise_multiplier=1.1, num_microbatches=4,
                                         insecure_reproducible_seed=9)),
        (tfdp.DPKerasAdagradOptimizer, dict(dp_sum_query=RandomizedNoiseQuery(
            LaplaceSumQuery(1.0, 2.0), 0.5, on_skip="release"))),
    ],
)
def test_get_config_round_trips(cls, kwargs):
    optimizer = cls(**kwargs)
    config = optimizer.get_config()
    rebuilt = cls.from_config(config)
    assert rebuilt.get_config() == config
    assert rebuilt.dp_settings == optimizer.dp_settings
    assert type(rebuilt.dp_sum_query) is type(optimizer.dp_sum_query)


def test_dp_settings_describe_the_mechanism_for_the_accountant():
    settings = tfdp.DPKerasSGDOptimizer(
        mechanism="laplace", noise_schedule="random", noise_probability=0.25, on_skip="drop",
        l1_norm_clip=2.0, noise_multiplier=3.0, num_microbatches=8,
    ).dp_settings
    assert settings["mechanism"] == "laplace"
    assert settings["noise_schedule"] == "random"
    assert settings["noise_probability"] == 0.25
    assert settings["on_skip"] == "drop"
    assert settings["noise_multiplier"] == 3.0
    assert settings["l1_norm_clip"] == 2.0
    assert settings["used_microbatching"] is True
    custom = tfdp.DPKerasSGDOptimizer(dp_sum_query=gaussian_query.GaussianSumQuery(2.0, 3.0))
    assert custom.dp_settings["noise_multiplier"] == pytest.approx(1.5)


@pytest.mark.parametrize("filename", ["model.keras"])
def test_saved_model_reloads_with_the_dp_optimizer_and_its_ledger(tmp_path, filename):
    x, y = _data(n=32)
    model = tfdp.make_private(_model())
    model.compile(
        optimizer=tfdp.DPKerasAdamOptimizer(
            learning_rate=0.01, noise_schedule="random", noise_probability=0.5,
            l2_norm_clip=1.0, noise_multiplier=1.0, insecure_reproducible_seed=4,
        ),
        loss=_per_example_loss(),
    )
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    path = str(tmp_path / filename)
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.optimizer).__name__ == "DPKerasAdamOptimizer"
    # The settings, not the count of noised coordinates, which a step records.
    settings = dict(model.optimizer.dp_settings, noised_coordinates=None)
    assert loaded.optimizer.dp_settings == settings
    for name in ["iterations", "noisy_steps", "dropped_steps"]:
        assert _int(getattr(loaded.optimizer, name)) == _int(getattr(model.optimizer, name)), name
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)


def test_checkpoint_restores_counters_and_draws_fresh_coins_and_noise(tmp_path):
    variable = tf.Variable(tf.zeros([3]))
    x = tf.ones([4, 3])

    def make():
        return tfdp.DPKerasSGDOptimizer(
            noise_schedule="random", noise_probability=0.5, l2_norm_clip=1.0,
            noise_multiplier=1.0, on_skip="drop",
        )

    def run(optimizer, steps):
        for _ in range(steps):
            optimizer.minimize(lambda: tf.reduce_sum(x * variable, axis=1), [variable])

    first = make()
    run(first, 8)
    path = tf.train.Checkpoint(optimizer=first).save(str(tmp_path / "ckpt"))
    resumed = make()
    tf.train.Checkpoint(optimizer=resumed).restore(path).assert_existing_objects_matched()
    for name in ("iterations", "noisy_steps", "dropped_steps"):
        assert _int(getattr(resumed, name)) == _int(getattr(first, name)), name
    run(resumed, 12)
    total = _int(resumed.iterations) + _int(resumed.dropped_steps)
    assert total == 20 and _int(resumed.noisy_steps) + _int(resumed.dropped_steps) == 20
    # The coin's old seed field is retired: nothing in the state can replay the schedule.
    np.testing.assert_array_equal(resumed.query_global_state().seed.numpy(), [0, 0])
    # A restored optimizer keeps its own, fresh key: the same step gets other noise.
    zeros = [tf.zeros([50])]
    again = make()
    tf.train.Checkpoint(optimizer=again).restore(path)
    noise = [np.concatenate([o.privatize_clipped_sum(zeros, 1, 1)[0].numpy() for _ in range(10)])
             for o in (first, again)]  # ten steps: some noisy (all dropped: p = 2^-10 each)
    assert not np.allclose(noise[0], noise[1])
