"""LayerNormalizationRule: exact per-example norms and clipped sums against a brute-force loop."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from rule_check import check_against_brute_force

import tfdp.training.rules.layer_normalization  # noqa: F401  (registers the rule)
from tfdp.training.rules.layer_normalization import LayerNormalizationRule
from tfdp.training.rules.registry import rule_for

RULE = "rule:LayerNormalizationRule"
# Keras warns that rms_scaling is deprecated on every call of such a layer.
pytestmark = pytest.mark.filterwarnings("ignore:You passed `rms_scaling=True`")
BATCH = 6


def _labels(batch=BATCH):
    return np.arange(batch) % 3


def _x(*shape, mean=0.5, scale=2.0):
    rng = np.random.default_rng(0)
    return (mean + scale * rng.normal(size=(BATCH,) + shape)).astype("float32")


def _ln(**kwargs):
    kwargs.setdefault("gamma_initializer", keras.initializers.RandomUniform(0.5, 1.5))
    if not kwargs.get("rms_scaling"):
        kwargs.setdefault("beta_initializer", "random_normal")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rms_scaling's deprecation warning
        return keras.layers.LayerNormalization(name="ln", **kwargs)


def _model(input_shape, layer_fn, units=4):
    """Dense (so the layer's input depends on weights too) -> the layer -> Dense(3).

    The Dense has no bias: normalizing over axes that leave the features out removes a
    per-feature bias exactly, whose gradient would then be rounding noise only.
    """

    def make():
        inputs = keras.Input(input_shape)
        h = keras.layers.Dense(units, use_bias=False, name="pre")(inputs)
        h = layer_fn()(h)
        h = keras.layers.Flatten()(h) if len(h.shape) > 2 else h
        return keras.Model(inputs, keras.layers.Dense(3, name="head")(h))

    return make


# name: (layer kwargs, input shape); the Dense before the layer makes the last axis 4.
CASES = {
    "last_axis_vector": (dict(), (5,)),
    "last_axis_sequence": (dict(), (5, 3)),
    "last_axis_positive": (dict(axis=2), (5, 3)),
    "time_axis": (dict(axis=1), (5, 3)),
    "axes_1_2": (dict(axis=[1, 2]), (5, 3)),
    "image_axes_1_2": (dict(axis=[1, 2]), (3, 2, 3)),
    "image_axes_1_3": (dict(axis=[1, 3]), (3, 2, 3)),
    "image_axes_-1_1": (dict(axis=[-1, 1]), (3, 2, 3)),
    "image_axes_2_-1": (dict(axis=(2, -1)), (3, 2, 3)),
    "image_all_axes": (dict(axis=[1, 2, 3]), (3, 2, 3)),
    "image_axis_-2": (dict(axis=-2), (2, 5, 3)),
    "no_scale": (dict(scale=False), (5, 3)),
    "no_center": (dict(center=False), (5, 3)),
    "no_scale_axes": (dict(scale=False, axis=[1, 2]), (5, 3)),
    "epsilon": (dict(epsilon=0.5), (5, 3)),
    "rms_scaling": (dict(rms_scaling=True), (5, 3)),
    "rms_scaling_axes": (dict(rms_scaling=True, axis=[-1, 1]), (5, 3)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_options(name):
    kwargs, shape = CASES[name]
    plan = check_against_brute_force(_model(shape, lambda: _ln(**kwargs)), _x(*shape), _labels())
    assert plan["ln"] == RULE


@pytest.mark.parametrize("frozen", ["gamma", "beta"])
def test_one_variable_frozen(frozen):
    def make():
        model = _model((5, 3), lambda: _ln(axis=[1, 2]))()
        getattr(model.get_layer("ln"), frozen).trainable = False
        return model

    plan = check_against_brute_force(make, _x(5, 3), _labels())
    assert plan["ln"] == RULE
    layer = make().get_layer("ln")
    assert [v.name for v in LayerNormalizationRule().variables(layer)] == (
        ["beta"] if frozen == "gamma" else ["gamma"])


def test_called_twice_shares_weights():
    def make():
        inputs = keras.Input((5, 3))
        ln = _ln(axis=[1, 2])
        first = ln(keras.layers.Dense(4, name="a")(inputs))
        second = ln(keras.layers.Dense(4, name="b")(inputs))
        h = keras.layers.Flatten()(keras.layers.Concatenate()([first, second]))
        return keras.Model(inputs, keras.layers.Dense(3, name="head")(h))

    plan = check_against_brute_force(make, _x(5, 3), _labels())
    assert plan["ln"] == RULE


def test_called_twice_on_different_lengths():
    def make():
        inputs = keras.Input((6, 3))
        ln = _ln()
        full = keras.layers.Dense(4, name="a")(inputs)
        pooled = keras.layers.MaxPooling1D()(full)
        h = keras.layers.Concatenate()([keras.layers.Flatten()(ln(full)),
                                        keras.layers.Flatten()(ln(pooled))])
        return keras.Model(inputs, keras.layers.Dense(3, name="head")(h))

    plan = check_against_brute_force(make, _x(6, 3), _labels())
    assert plan["ln"] == RULE


def test_sample_weights():
    plan = check_against_brute_force(_model((5, 3), lambda: _ln(axis=[1, 2])), _x(5, 3), _labels(),
                                     sample_weight=np.array([1.0, 0.5, 2.0, 0.25, 1.5, 1.0]))
    assert plan["ln"] == RULE


def test_transformer_like_sequence_model():
    """Embedding(mask_zero=True) -> LayerNormalization -> Dense, residual, masked pooling."""
    tokens = np.array([[3, 5, 2, 0, 0], [1, 1, 4, 7, 2], [6, 0, 0, 0, 0],
                       [2, 3, 4, 5, 6], [7, 7, 1, 0, 0], [4, 2, 0, 0, 0]], np.int32)

    def make():
        inputs = keras.Input((5,), dtype="int32")
        h = keras.layers.Embedding(8, 4, mask_zero=True, name="embed")(inputs)
        h = keras.layers.LayerNormalization(name="ln1")(h)
        r = keras.layers.Dense(8, activation="relu", name="ff1")(h)
        r = keras.layers.Dense(4, name="ff2")(r)
        h = keras.layers.LayerNormalization(name="ln2")(keras.layers.Add()([h, r]))
        h = keras.layers.GlobalAveragePooling1D()(h)
        return keras.Model(inputs, keras.layers.Dense(3, name="head")(h))

    plan = check_against_brute_force(make, tokens, _labels(), rtol=1e-4, atol=1e-5)
    assert plan["ln1"] == plan["ln2"] == RULE


def test_output_equals_the_layers_call():
    x = tf.constant(_x(3, 2, 4))
    for kwargs in (dict(), dict(axis=[-1, 1]), dict(axis=2, center=False),
                   dict(rms_scaling=True, axis=[1, 3])):
        layer = _ln(**kwargs)
        layer.build(x.shape)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            output, _, _ = LayerNormalizationRule().forward(layer, x)
            np.testing.assert_array_equal(output.numpy(), layer(x).numpy(), err_msg=str(kwargs))


def test_mixed_precision_output_dtype():
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        layer = _ln(axis=[1, 2])
        x = tf.constant(_x(3, 4), tf.float16)
        layer.build(x.shape)
        output, _, z = LayerNormalizationRule().forward(layer, x)
        assert output.dtype == tf.float16 and z.dtype == tf.float32
        np.testing.assert_array_equal(output.numpy(), layer(x).numpy())
    finally:
        keras.config.set_dtype_policy(policy)


def test_batch_axis_is_declined():
    layer = keras.layers.LayerNormalization(axis=[-3, -1])
    layer.axis = [-3, -1]  # resolves to the batch axis of a rank-3 input
    assert LayerNormalizationRule().forward(layer, tf.zeros([2, 3, 4])) is None
    assert not LayerNormalizationRule().supports(keras.layers.LayerNormalization(axis=[0, 1]))


def test_subclass_overriding_call_is_refused():
    class Shifted(keras.layers.LayerNormalization):
        def call(self, inputs):
            return super().call(inputs) + 1.0

    assert rule_for(Shifted(name="ln")) is None
    plan = check_against_brute_force(_model((5, 3), lambda: Shifted(name="ln")), _x(5, 3), _labels())
    assert plan["ln"] in ("local", "jacobian")
