"""GroupNormalizationRule: exact per-example norms and clipped sums against a brute-force loop."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from rule_check import check_against_brute_force

import tfdp.training.rules.group_normalization  # noqa: F401  (registers the rule)
from tfdp.training.rules.group_normalization import GroupNormalizationRule
from tfdp.training.rules.registry import rule_for

RULE = "rule:GroupNormalizationRule"
BATCH = 6


def _labels(batch=BATCH):
    return np.arange(batch) % 3


def _x(*shape, mean=0.5, scale=2.0):
    rng = np.random.default_rng(0)
    return (mean + scale * rng.normal(size=(BATCH,) + shape)).astype("float32")


def _gn(**kwargs):
    kwargs.setdefault("gamma_initializer", keras.initializers.RandomUniform(0.5, 1.5))
    kwargs.setdefault("beta_initializer", "random_normal")
    return keras.layers.GroupNormalization(name="gn", **kwargs)


def _model(input_shape, layer_fn, channels=6):
    """Dense (so the layer's input depends on weights too) -> the layer -> Dense(3).

    The Dense has no bias: normalizing per channel over positions (instance norm) removes
    a per-channel bias exactly, whose gradient would then be rounding noise only.
    """

    def make():
        inputs = keras.Input(input_shape)
        h = keras.layers.Dense(channels, use_bias=False, name="pre")(inputs)
        h = layer_fn()(h)
        h = keras.layers.Flatten()(h) if len(h.shape) > 2 else h
        return keras.Model(inputs, keras.layers.Dense(3, name="head")(h))

    return make


# name: (layer kwargs, input shape).
CASES = {
    "groups_2_image": (dict(groups=2), (3, 3, 4)),
    "instance_norm": (dict(groups=-1), (3, 3, 4)),
    "one_group": (dict(groups=1), (3, 3, 4)),
    "groups_equal_channels": (dict(groups=6), (3, 3, 4)),
    "sequence": (dict(groups=3), (5, 4)),
    "vector": (dict(groups=2), (4,)),
    "no_scale": (dict(groups=2, scale=False), (3, 3, 4)),
    "no_center": (dict(groups=3, center=False), (3, 3, 4)),
    "epsilon": (dict(groups=2, epsilon=0.5), (3, 3, 4)),
    "channel_axis_1": (dict(groups=3, axis=1), (3, 3, 4)),
    "channel_axis_-2": (dict(groups=3, axis=-2), (4, 3, 4)),
    "channel_axis_positive_last": (dict(groups=2, axis=3), (3, 3, 4)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_options(name):
    kwargs, shape = CASES[name]
    plan = check_against_brute_force(_model(shape, lambda: _gn(**kwargs)), _x(*shape), _labels())
    assert plan["gn"] == RULE


@pytest.mark.parametrize("frozen", ["gamma", "beta"])
def test_one_variable_frozen(frozen):
    def make():
        model = _model((3, 3, 4), lambda: _gn(groups=2))()
        getattr(model.get_layer("gn"), frozen).trainable = False
        return model

    plan = check_against_brute_force(make, _x(3, 3, 4), _labels())
    assert plan["gn"] == RULE
    layer = make().get_layer("gn")
    assert [v.name for v in GroupNormalizationRule().variables(layer)] == (
        ["beta"] if frozen == "gamma" else ["gamma"])


def test_frozen_layer_has_no_rule_entry():
    def make():
        model = _model((3, 3, 4), lambda: _gn(groups=2))()
        model.get_layer("gn").trainable = False
        return model

    plan = check_against_brute_force(make, _x(3, 3, 4), _labels())
    assert "gn" not in plan


def test_called_twice_shares_weights():
    def make():
        inputs = keras.Input((3, 3, 2))
        gn = _gn(groups=2)
        first = gn(keras.layers.Dense(4, name="a")(inputs))
        second = gn(keras.layers.Dense(4, name="b")(inputs))
        h = keras.layers.Flatten()(keras.layers.Concatenate()([first, second]))
        return keras.Model(inputs, keras.layers.Dense(3, name="head")(h))

    plan = check_against_brute_force(make, _x(3, 3, 2), _labels())
    assert plan["gn"] == RULE


def test_called_twice_on_different_shapes():
    def make():
        inputs = keras.Input((4, 4, 2))
        gn = _gn(groups=2)
        full = keras.layers.Dense(4, name="a")(inputs)
        pooled = keras.layers.MaxPooling2D()(full)
        h = keras.layers.Concatenate()([keras.layers.Flatten()(gn(full)),
                                        keras.layers.Flatten()(gn(pooled))])
        return keras.Model(inputs, keras.layers.Dense(3, name="head")(h))

    plan = check_against_brute_force(make, _x(4, 4, 2), _labels())
    assert plan["gn"] == RULE


def test_sample_weights():
    plan = check_against_brute_force(_model((3, 3, 4), lambda: _gn(groups=3)), _x(3, 3, 4),
                                     _labels(), sample_weight=np.array([1.0, 0.5, 2.0, 0.25, 1.5, 1.0]))
    assert plan["gn"] == RULE


def test_fixed_clip():
    plan = check_against_brute_force(_model((3, 3, 4), lambda: _gn(groups=2)), _x(3, 3, 4),
                                     _labels(), clip=1e-3)
    assert plan["gn"] == RULE


def test_resnet_block():
    """Conv2D -> GroupNormalization -> ReLU -> Conv2D, plus the residual, twice in a row."""

    def make():
        inputs = keras.Input((6, 6, 2))
        h = keras.layers.Conv2D(4, 3, padding="same", name="stem")(inputs)
        for i in range(2):
            r = keras.layers.Conv2D(4, 3, padding="same", name=f"conv{i}a")(h)
            r = keras.layers.GroupNormalization(groups=2, name=f"gn{i}")(r)
            r = keras.layers.ReLU()(r)
            r = keras.layers.Conv2D(4, 3, padding="same", name=f"conv{i}b")(r)
            h = keras.layers.ReLU()(keras.layers.Add()([h, r]))
        h = keras.layers.GlobalAveragePooling2D()(h)
        return keras.Model(inputs, keras.layers.Dense(3, name="head")(h))

    plan = check_against_brute_force(make, _x(6, 6, 2), _labels(), rtol=1e-4, atol=1e-5)
    assert plan["gn0"] == plan["gn1"] == RULE


def test_output_equals_the_layers_call():
    layer = _gn(groups=2)
    x = tf.constant(_x(3, 3, 4))
    layer.build(x.shape)
    output, _, _ = GroupNormalizationRule().forward(layer, x)
    np.testing.assert_array_equal(output.numpy(), layer(x).numpy())


def test_mixed_precision_output_dtype():
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        layer = _gn(groups=2)
        x = tf.constant(_x(3, 3, 4), tf.float16)
        layer.build(x.shape)
        output, _, z = GroupNormalizationRule().forward(layer, x)
        assert output.dtype == tf.float16 and z.dtype == tf.float32
        np.testing.assert_array_equal(output.numpy(), layer(x).numpy())
    finally:
        keras.config.set_dtype_policy(policy)


def test_subclass_overriding_call_is_refused():
    class Shifted(keras.layers.GroupNormalization):
        def call(self, inputs):
            return super().call(inputs) + 1.0

    layer = Shifted(groups=2, name="gn")
    assert rule_for(layer) is None
    plan = check_against_brute_force(_model((3, 3, 4), lambda: Shifted(groups=2, name="gn")),
                                     _x(3, 3, 4), _labels())
    assert plan["gn"] in ("local", "jacobian")
