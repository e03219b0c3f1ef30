"""PReLURule: exact per-example norms and clipped sums against a brute-force loop."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from rule_check import check_against_brute_force

import tfdp.training.rules.prelu  # noqa: F401  (registers the rule)
from tfdp.training.rules.prelu import PReLURule
from tfdp.training.rules.registry import rule_for

RULE = "rule:PReLURule"
BATCH = 6


def _labels(batch=BATCH):
    return np.arange(batch) % 3


def _x(*shape):
    return np.random.default_rng(0).normal(size=(BATCH,) + shape).astype("float32")


def _prelu(**kwargs):
    kwargs.setdefault("alpha_initializer", keras.initializers.RandomUniform(0.0, 0.5))
    return keras.layers.PReLU(name="prelu", **kwargs)


def _model(input_shape, layer_fn, units=4):
    """Dense (so the layer's input depends on weights too) -> the layer -> Dense(3)."""

    def make():
        inputs = keras.Input(input_shape)
        h = keras.layers.Dense(units, name="pre")(inputs)
        h = layer_fn()(h)
        h = keras.layers.Flatten()(h) if len(h.shape) > 2 else h
        return keras.Model(inputs, keras.layers.Dense(3, name="head")(h))

    return make


# name: (layer kwargs, input shape); the Dense before the layer makes the last axis 4.
CASES = {
    "vector": (dict(), (5,)),
    "image_unshared": (dict(), (3, 2, 3)),
    "image_shared_space": (dict(shared_axes=[1, 2]), (3, 2, 3)),
    "image_shared_channels": (dict(shared_axes=[3]), (3, 2, 3)),
    "image_shared_all": (dict(shared_axes=[1, 2, 3]), (3, 2, 3)),
    "sequence_shared_time": (dict(shared_axes=1), (5, 3)),
    # Keras maps a negative shared axis i to alpha's axis i - 1 (so -1 shares the
    # second-to-last axis): the rule follows alpha's shape, whatever it is.
    "negative_shared_axis": (dict(shared_axes=-1), (3, 2, 3)),
    "zero_alpha": (dict(alpha_initializer="zeros"), (5, 3)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_options(name):
    kwargs, shape = CASES[name]
    plan = check_against_brute_force(_model(shape, lambda: _prelu(**kwargs)), _x(*shape), _labels())
    assert plan["prelu"] == RULE


def test_called_twice_shares_weights():
    def make():
        inputs = keras.Input((5, 3))
        prelu = _prelu(shared_axes=[1])
        first = prelu(keras.layers.Dense(4, name="a")(inputs))
        second = prelu(keras.layers.Dense(4, name="b")(inputs))
        h = keras.layers.Flatten()(keras.layers.Concatenate()([first, second]))
        return keras.Model(inputs, keras.layers.Dense(3, name="head")(h))

    plan = check_against_brute_force(make, _x(5, 3), _labels())
    assert plan["prelu"] == RULE


def test_sample_weights():
    plan = check_against_brute_force(_model((5, 3), lambda: _prelu()), _x(5, 3), _labels(),
                                     sample_weight=np.array([1.0, 0.5, 2.0, 0.25, 1.5, 1.0]))
    assert plan["prelu"] == RULE


def test_after_masked_embedding():
    tokens = np.array([[3, 5, 2, 0], [1, 1, 4, 7], [6, 0, 0, 0],
                       [2, 3, 4, 5], [7, 7, 1, 0], [4, 2, 0, 0]], np.int32)

    def make():
        inputs = keras.Input((4,), dtype="int32")
        h = keras.layers.Embedding(8, 4, mask_zero=True, name="embed")(inputs)
        h = _prelu(shared_axes=[1])(h)
        h = keras.layers.GlobalAveragePooling1D()(h)
        return keras.Model(inputs, keras.layers.Dense(3, name="head")(h))

    plan = check_against_brute_force(make, tokens, _labels())
    assert plan["prelu"] == RULE


def test_conv_block():
    def make():
        inputs = keras.Input((5, 5, 2))
        h = keras.layers.Conv2D(3, 3, name="conv")(inputs)
        h = _prelu(shared_axes=[1, 2])(h)
        h = keras.layers.GlobalAveragePooling2D()(h)
        return keras.Model(inputs, keras.layers.Dense(3, name="head")(h))

    plan = check_against_brute_force(make, _x(5, 5, 2), _labels())
    assert plan["prelu"] == RULE


def test_frozen_alpha_has_no_rule_entry():
    def make():
        model = _model((5, 3), lambda: _prelu())()
        model.get_layer("prelu").alpha.trainable = False
        return model

    plan = check_against_brute_force(make, _x(5, 3), _labels())
    assert "prelu" not in plan
    assert PReLURule().variables(make().get_layer("prelu")) == []


def test_output_equals_the_layers_call():
    x = tf.constant(_x(3, 2, 4))
    for kwargs in (dict(), dict(shared_axes=[1, 2]), dict(shared_axes=-1)):
        layer = _prelu(**kwargs)
        layer.build(x.shape)
        output, _, _ = PReLURule().forward(layer, x)
        np.testing.assert_array_equal(output.numpy(), layer(x).numpy(), err_msg=str(kwargs))


def test_other_rank_is_declined():
    layer = _prelu()
    layer.build((None, 4))
    assert PReLURule().forward(layer, tf.zeros([2, 3, 4])) is None


def test_subclass_overriding_call_is_refused():
    class Shifted(keras.layers.PReLU):
        def call(self, inputs):
            return super().call(inputs) + 1.0

    assert rule_for(Shifted(name="prelu")) is None
    plan = check_against_brute_force(
        _model((5, 3), lambda: Shifted(name="prelu", alpha_initializer="random_uniform")),
        _x(5, 3), _labels())
    assert plan["prelu"] in ("local", "jacobian")
