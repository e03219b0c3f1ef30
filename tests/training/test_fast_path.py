"""make_private: the fast path's clipped gradient equals the optimizer path's for every
supported layer type, clip binding or not; refusals; retracing; counters."""

import numpy as np
import pytest
import keras
import tensorflow as tf

import tfdp

L = keras.layers
LOSS_NONE = None


def _loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=LOSS_NONE)


MODELS = {
    "dense": (lambda: keras.Sequential([keras.Input((6,)), L.Dense(8, activation="tanh"),
                                           L.Dense(3)]), (6,), "float"),
    "conv2d": (lambda: keras.Sequential([
        keras.Input((9, 9, 2)), L.Conv2D(4, 3, strides=2, padding="same", activation="relu"),
        L.Conv2D(5, 2, padding="valid", dilation_rate=2), L.MaxPool2D(2, 1), L.Flatten(),
        L.Dense(3)]), (9, 9, 2), "float"),
    "conv2d_wide_input": (lambda: keras.Sequential([
        keras.Input((6, 6, 5)), L.Conv2D(6, 3, strides=1, padding="same"), L.Flatten(),
        L.Dense(3)]), (6, 6, 5), "float"),
    "conv1d": (lambda: keras.Sequential([
        keras.Input((7, 2)), L.Conv1D(4, 3, padding="causal", activation="relu"),
        L.Conv1D(3, 2, strides=2), L.Flatten(), L.Dense(3)]), (7, 2), "float"),
    "embedding_layernorm_sequence_dense": (lambda: keras.Sequential([
        keras.Input((6,)), L.Embedding(11, 5), L.LayerNormalization(),
        L.Dense(4, activation="relu"), L.GlobalAveragePooling1D(), L.Dense(3)]), (6,), "int"),
    "conv2d_groupnorm": (lambda: keras.Sequential([
        keras.Input((6, 6, 1)), L.Conv2D(4, 3), L.GroupNormalization(2), L.Flatten(),
        L.Dense(3)]), (6, 6, 1), "float"),
}


def _data(shape, kind, n=12, seed=0):
    rng = np.random.default_rng(seed)
    if kind == "int":
        x = rng.integers(0, 11, size=(n,) + shape)
    else:
        x = rng.normal(size=(n,) + shape).astype("float32") * 2
    return x, rng.integers(0, 3, size=n)


def _one_noiseless_step(make, x, y, fast, **dp):
    """One full-batch step; `fast`: make_private's layer rules, else the optimizer's Jacobian."""
    keras.utils.set_random_seed(1)
    model = make()
    before = [v.numpy() for v in model.trainable_variables]
    optimizer = tfdp.DPKerasSGDOptimizer(learning_rate=1.0, noise_multiplier=0.0, **dp)
    if fast:
        trained = tfdp.make_private(model)
        trained.compile(optimizer=optimizer, loss=_loss())
        trained.fit(x, y, batch_size=len(y), epochs=1, shuffle=False, verbose=0)
    else:
        with tf.GradientTape() as tape:
            losses = _loss()(y, model(x, training=True))
        optimizer.minimize(losses, model.trainable_variables, tape=tape)
    return [b - v.numpy() for b, v in zip(before, model.trainable_variables)]


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("dp", [dict(l2_norm_clip=0.05), dict(l2_norm_clip=1e4),
                                dict(mechanism="laplace", l1_norm_clip=0.2)],
                         ids=["l2_binding", "l2_not_binding", "l1_binding"])
def test_fast_clipped_gradient_equals_the_optimizer_path(name, dp):
    make, shape, kind = MODELS[name]
    x, y = _data(shape, kind)
    fast = _one_noiseless_step(make, x, y, True, **dp)
    reference = _one_noiseless_step(make, x, y, False, **dp)
    assert any(np.abs(r).max() > 0 for r in reference)
    for f, r in zip(fast, reference):
        np.testing.assert_allclose(f, r, rtol=1e-4, atol=1e-7)


def test_batch_normalization_is_refused_with_advice():
    model = keras.Sequential([keras.Input((3,)), L.Dense(4), L.BatchNormalization(), L.Dense(2)])
    with pytest.raises(ValueError, match="GroupNormalization"):
        tfdp.make_private(model)


def test_an_unbuilt_model_is_refused_with_advice():
    with pytest.raises(ValueError, match="input_shape"):
        tfdp.make_private(keras.Sequential([L.Dense(2)]))


def test_activity_regularizer_is_refused():
    model = keras.Sequential([keras.Input((3,)), L.Dense(4, activity_regularizer="l2")])
    with pytest.raises(ValueError, match="activity_regularizer"):
        tfdp.make_private(model)


def test_a_non_dp_optimizer_is_refused():
    model = tfdp.make_private(MODELS["dense"][0]())
    model.compile(optimizer="sgd", loss=_loss())
    x, y = _data((6,), "float")
    with pytest.raises(ValueError, match="tfdp DP optimizer"):
        model.fit(x, y, verbose=0)


def test_variable_batch_sizes_do_not_retrace_each_step():
    model = tfdp.make_private(MODELS["dense"][0]())
    model.compile(optimizer=tfdp.DPKerasSGDOptimizer(l2_norm_clip=1.0, noise_multiplier=1.0),
                  loss=_loss())
    traces = []  # train_step runs in Python only while tf.function traces it
    original = model.train_step
    model.train_step = lambda data: (traces.append(1), original(data))[1]
    sizes = [7, 12, 5, 9, 14, 6, 11, 8]  # as Poisson sampling gives
    batches = [_data((6,), "float", n=s, seed=i) for i, s in enumerate(sizes)]
    data = tf.data.Dataset.from_generator(
        lambda: iter(batches),
        output_signature=(tf.TensorSpec([None, 6], tf.float32), tf.TensorSpec([None], tf.int64)))
    model.fit(data, epochs=2, verbose=0)
    assert 1 <= len(traces) <= 2
    # An iterator of unknown length ends with a failed get_next: that attempt must not count.
    assert int(np.asarray(model.optimizer.iterations)) == 2 * len(sizes)
    assert int(np.asarray(model.optimizer.noisy_steps)) == 2 * len(sizes)
    assert int(np.asarray(model.optimizer.largest_batch_size)) == 14


def test_dropped_steps_through_the_fast_path_change_no_weight():
    make, shape, kind = MODELS["conv2d"]
    x, y = _data(shape, kind)
    model = make()
    private = tfdp.make_private(model)
    private.compile(optimizer=tfdp.DPKerasAdamOptimizer(
        learning_rate=0.1, noise_schedule="random", noise_probability=0.0, on_skip="drop",
        l2_norm_clip=1.0, noise_multiplier=1.0, insecure_reproducible_seed=0), loss=_loss())
    before = [v.numpy().copy() for v in model.variables]
    private.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert int(np.asarray(private.optimizer.dropped_steps)) == 3
    assert int(np.asarray(private.optimizer.iterations)) == 0
    for b, v in zip(before, model.variables):
        np.testing.assert_array_equal(b, v.numpy())


def test_weight_regularizer_gradient_is_added_after_the_noise():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), L.Dense(3, kernel_regularizer=keras.regularizers.l2(0.5))])
    private = tfdp.make_private(model)
    private.compile(optimizer=tfdp.DPKerasSGDOptimizer(
        learning_rate=1.0, l2_norm_clip=1e-9, noise_multiplier=0.0), loss=_loss())
    kernel = model.layers[0].kernel.numpy()
    x, y = _data((4,), "float", n=8)
    private.fit(x, y, batch_size=8, epochs=1, verbose=0)
    # With a vanishing clip, the data gradient is ~0: the step is the regularizer's gradient.
    np.testing.assert_allclose(model.layers[0].kernel.numpy(), kernel - 1.0 * kernel, atol=1e-6)


class _DataLoss(L.Layer):
    """Adds a loss computed from its inputs: per-example clipping cannot bound it."""

    def call(self, x):
        self.add_loss(tf.reduce_mean(tf.square(x)))
        return x


@pytest.mark.parametrize("physical", [None, 4], ids=["one_batch", "physical_batches"])
def test_a_loss_added_from_the_data_is_refused(physical):
    model = keras.Sequential([keras.Input((4,)), L.Dense(3), _DataLoss()])
    private = tfdp.make_private(model, physical_batch_size=physical)
    private.compile(optimizer=tfdp.DPKerasSGDOptimizer(
        learning_rate=0.1, l2_norm_clip=1.0, noise_multiplier=1.0), loss=_loss())
    x, y = _data((4,), "float", n=8)
    with pytest.raises(ValueError, match="losses computed from the data"):
        private.fit(x, y, batch_size=8, epochs=1, verbose=0)


def test_the_private_model_predicts_like_the_original():
    make, shape, kind = MODELS["conv1d"]
    model = make()
    x, _ = _data(shape, kind)
    np.testing.assert_allclose(tfdp.make_private(model).predict(x, verbose=0),
                               model.predict(x, verbose=0), rtol=1e-6)


@keras.saving.register_keras_serializable(package="tfdp_tests")
class _Subclassed(keras.Model):
    """A subclassed model (no functional graph): make_private wraps it."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = L.Dense(8, activation="tanh")
        self.out = L.Dense(3)

    def call(self, inputs, training=None):
        return self.out(self.hidden(inputs))


def test_a_subclassed_model_trains_like_its_functional_twin_and_saves(tmp_path):
    x, y = _data((6,), "float")
    dp = dict(l2_norm_clip=0.05)
    reference = _one_noiseless_step(MODELS["dense"][0], x, y, False, **dp)

    def make():
        model = _Subclassed()
        model(x[:1])  # create the weights (the same initial values as the Sequential twin)
        return model

    keras.utils.set_random_seed(1)
    twin = MODELS["dense"][0]()
    subclassed = make()
    for target, source in zip(subclassed.trainable_variables, twin.trainable_variables):
        target.assign(source)
    before = [v.numpy() for v in subclassed.trainable_variables]
    private = tfdp.make_private(subclassed)
    assert type(private).__name__ == "PrivateWrapper"
    private.compile(optimizer=tfdp.DPKerasSGDOptimizer(learning_rate=1.0, noise_multiplier=0.0,
                                                       **dp), loss=_loss())
    private.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    for b, v, r in zip(before, subclassed.trainable_variables, reference):
        np.testing.assert_allclose(b - v.numpy(), r, rtol=1e-4, atol=1e-7)
    path = str(tmp_path / "subclassed.keras")
    private.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), private.predict(x, verbose=0),
                               rtol=1e-6)
    assert int(np.asarray(loaded.optimizer.noisy_steps)) == 1


def test_a_functional_model_with_two_inputs_matches_the_jacobian_path():
    def make():
        left, right = keras.Input((4,), name="left"), keras.Input((3,), name="right")
        hidden = L.Concatenate()([L.Dense(5, activation="relu")(left), L.Dense(2)(right)])
        return keras.Model({"left": left, "right": right}, L.Dense(3)(hidden))

    rng = np.random.default_rng(3)
    x = {"left": rng.normal(size=(10, 4)).astype("float32"),
         "right": rng.normal(size=(10, 3)).astype("float32")}
    y = rng.integers(0, 3, 10)
    fast = _one_noiseless_step(make, x, y, True, l2_norm_clip=0.05)
    reference = _one_noiseless_step(make, x, y, False, l2_norm_clip=0.05)
    for f, r in zip(fast, reference):
        np.testing.assert_allclose(f, r, rtol=1e-4, atol=1e-7)


def test_an_object_that_is_not_a_keras_3_model_is_refused():
    with pytest.raises(ValueError, match="keras.Model"):
        tfdp.make_private(tf.Module())


def test_a_tf_keras_model_is_refused_with_advice_to_use_keras_3():
    legacy_class = type("Sequential", (), {"fit": lambda self: None,
                                           "__module__": "tf_keras.src.engine.sequential"})
    with pytest.raises(ValueError, match=r"tf-keras \(Keras 2"):
        tfdp.make_private(legacy_class())
