"""NaN/inf losses or gradients: a clear error by default (the step stays in the ledger), or
per-example skipping that keeps the step's DP guarantee and is counted."""

import numpy as np
import pytest
import keras
import tensorflow as tf

import tfdp

LOSS = keras.losses.SparseCategoricalCrossentropy(
    from_logits=True, reduction=None)


def _data(bad_rows=(3,)):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 5)).astype("float32")
    y = rng.integers(0, 3, size=8)
    for row in bad_rows:
        x[row, 0] = np.inf
    return x, y


def _model(fast):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="tanh"),
                              keras.layers.Dense(3)])
    return model, tfdp.make_private(model)


def _jacobian_path(fast):
    """Per-example microbatches send make_private's step through the whole-model Jacobian."""
    return {} if fast else {"num_microbatches": 8}


@pytest.mark.parametrize("fast", [False, True], ids=["jacobian_path", "fast_path"])
def test_non_finite_examples_stop_training_with_an_explanation_and_are_counted(fast):
    model, trained = _model(fast)
    optimizer = tfdp.DPKerasSGDOptimizer(l2_norm_clip=1.0, noise_multiplier=1.0,
                                         **_jacobian_path(fast))
    trained.compile(optimizer=optimizer, loss=LOSS)
    before = [v.numpy() for v in model.trainable_variables]
    x, y = _data()
    with pytest.raises(tf.errors.InvalidArgumentError, match="non-finite.*ledger"):
        trained.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert int(np.asarray(optimizer.noisy_steps)) == 1  # it touched the data: counted
    assert int(np.asarray(optimizer.iterations)) == 0  # but not applied
    for b, v in zip(before, model.trainable_variables):
        np.testing.assert_array_equal(b, v.numpy())


def test_skip_on_the_fast_path_zeroes_only_the_bad_examples_and_counts_them():
    fast = True
    x, y = _data(bad_rows=(3, 6))
    good = np.array([i not in (3, 6) for i in range(8)])

    def step(xs, ys, on_nonfinite):
        model, trained = _model(fast)
        before = [v.numpy() for v in model.trainable_variables]
        optimizer = tfdp.DPKerasSGDOptimizer(
            learning_rate=1.0, l2_norm_clip=0.5, noise_multiplier=0.0,
            expected_batch_size=8, on_nonfinite=on_nonfinite)
        trained.compile(optimizer=optimizer, loss=LOSS)
        trained.fit(xs, ys, batch_size=len(xs), epochs=1, verbose=0)
        return [b - v.numpy() for b, v in zip(before, model.trainable_variables)], optimizer

    skipped, optimizer = step(x, y, "skip")
    # The same step on the good examples only, divided by the same expected batch size.
    reference, _ = step(x[good], y[good], "raise")
    assert int(np.asarray(optimizer.skipped_examples)) == 2
    for s, r in zip(skipped, reference):
        assert np.all(np.isfinite(s))
        np.testing.assert_allclose(s, r, rtol=1e-5, atol=1e-7)


class _Scale(keras.layers.Layer):
    """A custom layer without a rule: the fast path takes its own per-example VJP."""

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.w + 0.1 * tf.tanh(x)


ISOLATING_MODELS = {
    "rules": lambda: [keras.layers.Conv1D(3, 2, activation="tanh"), keras.layers.Flatten(),
                      keras.layers.LayerNormalization(), keras.layers.Dense(3)],
    "local_vjp": lambda: [keras.layers.Flatten(), _Scale(), keras.layers.Dense(3)],
}


@pytest.mark.parametrize("kind", sorted(ISOLATING_MODELS))
def test_the_fast_paths_rules_and_local_vjps_isolate_a_skipped_example_exactly(kind):
    # The clipped sum with one inf example skipped equals the clipped sum without it.
    rng = np.random.default_rng(2)
    x = rng.normal(size=(6, 4, 2)).astype("float32")
    y = rng.integers(0, 3, size=6)
    x[4, 1, 0] = np.inf
    good = np.arange(6) != 4

    def update(xs, ys, on_nonfinite):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4, 2)), *ISOLATING_MODELS[kind]()])
        plan = tfdp.training.gradient_plan(model, xs)
        assert "jacobian" not in plan.values(), plan
        before = [v.numpy() for v in model.trainable_variables]
        trained = tfdp.make_private(model)
        optimizer = tfdp.DPKerasSGDOptimizer(
            learning_rate=1.0, l2_norm_clip=0.3, noise_multiplier=0.0, expected_batch_size=1,
            on_nonfinite=on_nonfinite)
        trained.compile(optimizer=optimizer, loss=LOSS)
        trained.fit(xs, ys, batch_size=len(xs), epochs=1, verbose=0)
        delta = [b - v.numpy() for b, v in zip(before, model.trainable_variables)]
        return delta, int(np.asarray(optimizer.skipped_examples)), plan

    skipped, count, plan = update(x, y, "skip")
    reference, _, _ = update(x[good], y[good], "raise")
    assert count == 1
    assert ("local" in plan.values()) == (kind == "local_vjp")
    assert float(tf.linalg.global_norm(reference)) > 0.3  # several units of clip 0.3 summed
    for s, r in zip(skipped, reference):
        np.testing.assert_allclose(s, r, rtol=1e-5, atol=1e-6)


def test_on_nonfinite_is_validated_and_serialized():
    with pytest.raises(ValueError, match="on_nonfinite"):
        tfdp.DPKerasSGDOptimizer(l2_norm_clip=1.0, noise_multiplier=1.0, on_nonfinite="ignore")
    optimizer = tfdp.DPKerasSGDOptimizer(l2_norm_clip=1.0, noise_multiplier=1.0,
                                         on_nonfinite="skip")
    assert tfdp.DPKerasSGDOptimizer.from_config(optimizer.get_config()).on_nonfinite == "skip"


def _clean_and_one_inf():
    """Three clean examples and the same three plus one with an infinite input."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 5)).astype("float32")
    y = rng.integers(0, 3, size=4)
    x[3, 0] = np.inf
    return (x[:3], y[:3]), (x, y)


def _custom_loop_step(optimizer, model, x, y):
    @tf.function
    def step():
        optimizer.minimize(lambda: LOSS(y, model(x, training=True)), model.trainable_variables)
    step()


def test_the_batched_jacobian_spreads_one_inf_example_over_every_row():
    # Why skipping cannot work on the Jacobian path: the batched backward multiplies the
    # infinite input by the other examples' zero upstream gradients (inf x 0 = NaN).
    model, _ = _model(False)
    _, (x, y) = _clean_and_one_inf()
    with tf.GradientTape() as tape:
        losses = LOSS(y, model(x))
    jacobian = tape.jacobian(losses, model.trainable_variables)
    rows_finite = [bool(np.all(np.isfinite(j[i]))) for i in range(4) for j in jacobian[:1]]
    assert rows_finite == [False, False, False, False]


def test_skip_is_refused_on_the_optimizers_jacobian_path():
    # Before: the three clean examples' clipped sum (norm 1.59 here, clip 1) became 0 once one
    # inf example joined, and skipped_examples counted 4: one record moved the sum by B x C.
    model, _ = _model(False)
    (xc, yc), (x, y) = _clean_and_one_inf()
    reference = tfdp.DPKerasSGDOptimizer(l2_norm_clip=1.0, noise_multiplier=0.0,
                                         expected_batch_size=1)
    clean = reference.private_gradients(lambda: LOSS(yc, model(xc)), model.trainable_variables)
    assert 1.0 < float(tf.linalg.global_norm(clean)) <= 3.0  # three units, each clipped to 1
    before = [v.numpy() for v in model.trainable_variables]
    for batch in ((xc, yc), (x, y)):
        optimizer = tfdp.DPKerasSGDOptimizer(l2_norm_clip=1.0, noise_multiplier=0.0,
                                             expected_batch_size=1, on_nonfinite="skip")
        with pytest.raises(ValueError, match="(?s)on_nonfinite='skip'.*Jacobian.*"
                                             "on_nonfinite='raise'.*make_private"):
            _custom_loop_step(optimizer, model, *batch)
        assert int(np.asarray(optimizer.skipped_examples)) == 0
        assert int(np.asarray(optimizer.noisy_steps)) == 0
    for b, v in zip(before, model.trainable_variables):
        np.testing.assert_array_equal(b, v.numpy())


@pytest.mark.parametrize("how", ["microbatches", "no_fast_path"])
def test_skip_is_refused_on_make_privates_jacobian_path(how):
    # Before: the whole batch was zeroed (skipped_examples between 2 and 8 for two bad rows).
    x, y = _data(bad_rows=(3, 6))
    model, trained = _model(False)
    before = [v.numpy() for v in model.trainable_variables]
    optimizer = tfdp.DPKerasSGDOptimizer(
        learning_rate=1.0, l2_norm_clip=0.5, noise_multiplier=0.0, on_nonfinite="skip",
        **(_jacobian_path(False) if how == "microbatches" else {}))
    if how == "no_fast_path":
        trained.use_fast_path = False
    trained.compile(optimizer=optimizer, loss=LOSS)
    with pytest.raises(ValueError, match="(?s)on_nonfinite='skip'.*on_nonfinite='raise'"):
        trained.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert int(np.asarray(optimizer.skipped_examples)) == 0
    assert int(np.asarray(optimizer.iterations)) == 0
    for b, v in zip(before, model.trainable_variables):
        np.testing.assert_array_equal(b, v.numpy())


class _TiedProjection(keras.layers.Layer):
    """Logits from the embedding matrix transposed: the embedding takes the Jacobian path."""

    def __init__(self, embedding, **kwargs):
        super().__init__(**kwargs)
        self.embedding = embedding

    def call(self, inputs):
        return tf.matmul(inputs, self.embedding.embeddings, transpose_b=True)


def _tied_model():
    keras.utils.set_random_seed(0)
    tokens = keras.Input((5,), dtype="int32")
    embedding = keras.layers.Embedding(7, 4)
    hidden = keras.layers.GlobalAveragePooling1D()(
        keras.layers.Dense(4, activation="tanh")(embedding(tokens)))
    return keras.Model(tokens, _TiedProjection(embedding)(hidden))


def test_skip_is_refused_on_the_fast_path_when_the_plan_has_jacobian_variables():
    rng = np.random.default_rng(0)
    ids, y = rng.integers(1, 7, size=(6, 5)), rng.integers(0, 7, size=6)
    # One example with an infinite weight: its loss is inf, and before this refusal the
    # tied embedding's batched Jacobian made all six units non-finite (all six skipped).
    weights = np.array([1.0, 1.0, np.inf, 1.0, 1.0, 1.0], "float32")
    model = _tied_model()
    assert tfdp.training.gradient_plan(model, ids)["embedding"] == "jacobian"
    trained = tfdp.make_private(model)
    optimizer = tfdp.DPKerasSGDOptimizer(learning_rate=1.0, l2_norm_clip=1.0,
                                         noise_multiplier=0.0, on_nonfinite="skip")
    trained.compile(optimizer=optimizer, loss=LOSS)
    before = [v.numpy() for v in model.trainable_variables]
    with pytest.raises(ValueError, match="(?s)on_nonfinite='skip'.*'embedding'.*tied"):
        trained.fit(ids, y, sample_weight=weights, batch_size=6, epochs=1, verbose=0)
    assert int(np.asarray(optimizer.skipped_examples)) == 0
    for b, v in zip(before, model.trainable_variables):
        np.testing.assert_array_equal(b, v.numpy())
    # on_nonfinite="raise" still trains such a model (and stops on the bad example).
    model = _tied_model()
    trained = tfdp.make_private(model)
    optimizer = tfdp.DPKerasSGDOptimizer(learning_rate=1.0, l2_norm_clip=1.0,
                                         noise_multiplier=0.0)
    trained.compile(optimizer=optimizer, loss=LOSS)
    trained.fit(ids, y, batch_size=6, epochs=1, verbose=0)
    assert int(np.asarray(optimizer.iterations)) == 1
