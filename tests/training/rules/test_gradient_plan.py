"""The GradientPlan: which exact path each variable takes, and that every path agrees with a
brute-force per-example loop (tied weights, the local fallback, user rules, unused weights)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdp
from tfdp.training.rules import base

from rule_check import check_against_brute_force

L = keras.layers


@keras.saving.register_keras_serializable(package="tfdp_tests")
class TiedProjection(L.Layer):
    """Logits from the embedding matrix transposed (weight tying), plus a bias of its own."""

    def __init__(self, embedding, **kwargs):
        super().__init__(**kwargs)
        self.embedding = embedding

    def build(self, input_shape):
        self.bias = self.add_weight(shape=(self.embedding.input_dim,), initializer="zeros")

    def call(self, inputs):
        return tf.matmul(inputs, self.embedding.embeddings, transpose_b=True) + self.bias


class Affine(L.Layer):
    """A custom layer with weights and a nested Dense: the local fallback's case."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inner = L.Dense(3)

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones")
        self.shift = self.add_weight(shape=(3,), initializer="random_normal")

    def call(self, inputs, mask=None):
        return tf.tanh(self.inner(inputs * self.scale)) * tf.square(self.shift)


class NoisyScale(L.Layer):
    """Draws random numbers in its call: no per-example re-run can reproduce it."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones")

    def call(self, inputs, training=None):
        return inputs * self.scale + tf.random.normal(tf.shape(inputs))


class AddPositions(L.Layer):
    """ViT-style learned position embeddings: an Embedding looked up on fixed ids (shape
    [1, length], the same for every example) and broadcast-added to the tokens."""

    def build(self, input_shape):
        self.positions = L.Embedding(input_shape[1], input_shape[2], name="positions")
        self.positions.build((1, input_shape[1]))

    def call(self, inputs):
        ids = tf.range(tf.shape(inputs)[1])[None]
        return inputs + self.positions(ids)


def _tied_model():
    tokens = keras.Input((5,), dtype="int32")
    embedding = L.Embedding(7, 4)
    hidden = L.GlobalAveragePooling1D()(L.Dense(4, activation="tanh")(embedding(tokens)))
    return keras.Model(tokens, TiedProjection(embedding)(hidden))


def _tokens(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(1, 7, size=(n, 5)), rng.integers(0, 7, size=n)


def test_tied_weights_leave_the_embedding_rule_and_stay_exact():
    x, y = _tokens()
    plan = check_against_brute_force(_tied_model, x, y)
    assert plan["embedding"] == "jacobian"
    assert plan["dense"] == "rule:DenseRule"


def test_tied_weights_inside_one_block_take_that_blocks_local_vjp():
    class Block(L.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.embedding = L.Embedding(7, 4)
            self.projection = TiedProjection(self.embedding)

        def call(self, inputs):
            return self.projection(tf.reduce_mean(self.embedding(inputs), axis=1))

    def make():
        tokens = keras.Input((5,), dtype="int32")
        return keras.Model(tokens, Block(name="block")(tokens))

    x, y = _tokens()
    plan = check_against_brute_force(make, x, y)
    assert plan["block"] == "local" and "embedding" not in plan


def _affine_model(twice=False):
    inputs = keras.Input((4,))
    affine = Affine(name="affine")
    hidden = affine(inputs)
    if twice:
        hidden = hidden + affine(L.Dense(4, name="dense_between")(inputs))
    return keras.Model(inputs, L.Dense(3, name="head")(hidden))


@pytest.mark.parametrize("twice", [False, True], ids=["once", "called_twice"])
def test_a_custom_layer_takes_its_local_vjp_and_matches_the_loop(twice):
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(6, 4)).astype("float32"), rng.integers(0, 3, 6)
    plan = check_against_brute_force(lambda: _affine_model(twice), x, y,
                                     sample_weight=np.array([1.0, 0.5, 2.0, 1.0, 0.0, 1.5]))
    assert plan["affine"] == "local"
    assert plan["dense"] == "rule:DenseRule" and plan["head"] == "rule:DenseRule"


def test_a_layer_called_on_no_example_leaves_its_rule_for_the_enclosing_layer():
    # The Embedding's output gradient is the sum over the batch: its rule would see one
    # "example" for the whole batch. The layer around it re-runs it per example instead.
    tokens = keras.Input((5, 4))
    hidden = L.Flatten()(AddPositions(name="add_positions")(L.Dense(4, name="dense")(tokens)))
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(6, 5, 4)).astype("float32"), rng.integers(0, 3, 6)
    plan = check_against_brute_force(
        lambda: keras.Model(tokens, L.Dense(3, name="head")(hidden)), x, y)
    assert plan == {"dense": "rule:DenseRule", "add_positions": "local",
                    "head": "rule:DenseRule"}


def test_a_user_rule_is_used_for_its_class_and_subclasses_that_keep_call():
    class Scale(L.Layer):
        def build(self, input_shape):
            self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones")

        def call(self, inputs):
            return inputs * self.w

    class ScaleRule(base.PerExampleGradientRule):
        calls = 0

        def variables(self, layer):
            return [layer.w]

        def forward(self, layer, inputs, *args, **kwargs):
            ScaleRule.calls += 1
            z = inputs * layer.w
            return z, inputs, z

        def per_example_gradients(self, layer, calls):
            return {base.var_key(layer.w): tf.add_n([a * g for a, g in calls])}

    class SubScale(Scale):
        pass

    class OverridingScale(Scale):
        def call(self, inputs):
            return inputs * self.w * 2.0

    rule = tfdp.training.register_layer_rule(Scale, ScaleRule)
    try:
        def make(cls):
            inputs = keras.Input((3,))
            return keras.Model(inputs, L.Dense(2)(cls(name="scale")(inputs)))

        rng = np.random.default_rng(2)
        x, y = rng.normal(size=(5, 3)).astype("float32"), rng.integers(0, 2, 5)
        assert check_against_brute_force(lambda: make(Scale), x, y)["scale"] == "rule:ScaleRule"
        assert ScaleRule.calls > 0
        assert check_against_brute_force(lambda: make(SubScale), x, y)["scale"] == "rule:ScaleRule"
        # A subclass with its own call would be measured wrongly by Scale's rule: local VJP.
        assert check_against_brute_force(lambda: make(OverridingScale), x, y)["scale"] == "local"
        assert isinstance(rule, ScaleRule) and Scale in rule.layer_types
    finally:
        tfdp.training.unregister_layer_rule(Scale)
    assert tfdp.training.rule_for(Scale()) is None


def test_register_layer_rule_refuses_what_is_not_a_layer_or_a_rule():
    with pytest.raises(TypeError, match="keras.layers.Layer"):
        tfdp.training.register_layer_rule(int, base.LayerRule())
    with pytest.raises(TypeError, match="LayerRule"):
        tfdp.training.register_layer_rule(L.Dense, object())


def test_a_layer_that_draws_random_numbers_stops_the_step_with_advice():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, L.Dense(3)(NoisyScale(name="noisy")(inputs)))
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(6, 4)).astype("float32"), rng.integers(0, 3, 6)
    assert tfdp.training.gradient_plan(model, x)["noisy"] == "local"
    with pytest.raises(tf.errors.InvalidArgumentError, match="register_layer_rule"):
        tfdp.training.clipped_gradient_sum(
            model, keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None),
            x, y, clip=1.0)


def test_an_unused_variable_gets_a_zero_gradient():
    class Unused(L.Layer):
        def build(self, input_shape):
            self.used = self.add_weight(shape=(input_shape[-1],), initializer="ones")
            self.unused = self.add_weight(shape=(2,), initializer="ones")

        def call(self, inputs):
            return inputs * self.used

    def make():
        inputs = keras.Input((4,))
        return keras.Model(inputs, L.Dense(3)(Unused(name="partly_used")(inputs)))

    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(5, 4)).astype("float32"), rng.integers(0, 3, 5)
    assert check_against_brute_force(make, x, y)["partly_used"] == "local"


def test_training_with_the_local_fallback_equals_the_optimizer_path():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(8, 4)).astype("float32"), rng.integers(0, 3, 8)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)

    def step(fast):
        keras.utils.set_random_seed(1)
        model = _affine_model()
        before = [v.numpy() for v in model.trainable_variables]
        optimizer = tfdp.DPKerasSGDOptimizer(learning_rate=1.0, noise_multiplier=0.0,
                                             l2_norm_clip=0.1)
        if fast:
            private = tfdp.make_private(model)
            private.compile(optimizer=optimizer, loss=loss)
            private.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
        else:
            with tf.GradientTape() as tape:
                losses = loss(y, model(x, training=True))
            optimizer.minimize(losses, model.trainable_variables, tape=tape)
        return [b - v.numpy() for b, v in zip(before, model.trainable_variables)]

    for fast, reference in zip(step(True), step(False)):
        np.testing.assert_allclose(fast, reference, rtol=1e-4, atol=1e-7)


def test_the_local_fallback_is_exact_for_sequence_matmuls_with_onednn_on_and_off():
    # Re-run per example, a [1, T, K] x [K, N] matmul vectorizes into a [B, 1, T, K] x [K, N]
    # one, which TensorFlow 2.21's oneDNN kernels get wrong: the fallback must not emit it.
    class SequenceProjection(L.Layer):
        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(input_shape[-1], 4), initializer="glorot_uniform")

        def call(self, inputs):
            return tf.matmul(inputs, self.kernel)

    def make():
        inputs = keras.Input((6, 3))
        hidden = L.GlobalAveragePooling1D()(SequenceProjection(name="projection")(inputs))
        return keras.Model(inputs, L.Dense(3)(hidden))

    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(6, 6, 3)).astype("float32"), rng.integers(0, 3, 6)
    assert check_against_brute_force(make, x, y)["projection"] == "local"
