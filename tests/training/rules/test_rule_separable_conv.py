"""SeparableConvRule (SeparableConv1D/2D): per-example norms and clipped sums vs a brute force."""

import numpy as np
import pytest
import keras
import tensorflow as tf

from rule_check import check_against_brute_force

from tfdp.training.rules import separable_conv  # noqa: F401  (registers the rule)
from tfdp.training.rules.registry import rule_for

L = keras.layers
RULE = "rule:SeparableConvRule"


def _data(shape, n=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n,) + shape).astype("float32")
    return x, rng.integers(0, 3, size=n)


def _sequential(shape, layer):
    return lambda: keras.Sequential([keras.Input(shape), layer(), L.Flatten(), L.Dense(3)])


# (input shape, layer factory). "ghost" cases have few output positions and a wide pointwise
# kernel, so the pointwise L2 norm takes the ghost form (positions * (in + out) < in * out).
CASES = {
    # SeparableConv1D
    "1d_plain": ((8, 3), lambda: L.SeparableConv1D(4, 3, name="sep")),
    "1d_multiplier_2_same": ((8, 2), lambda: L.SeparableConv1D(
        3, 3, depth_multiplier=2, padding="same", activation="tanh", name="sep")),
    "1d_strided": ((9, 2), lambda: L.SeparableConv1D(4, 3, strides=2, name="sep")),
    "1d_dilated_same": ((9, 3), lambda: L.SeparableConv1D(2, 3, dilation_rate=2,
                                                          padding="same", name="sep")),
    "1d_strided_dilated": ((11, 2), lambda: L.SeparableConv1D(
        3, 3, strides=2, dilation_rate=2, depth_multiplier=2, name="sep")),
    "1d_no_bias": ((8, 3), lambda: L.SeparableConv1D(4, 2, use_bias=False, name="sep")),
    "1d_ghost": ((4, 3), lambda: L.SeparableConv1D(16, 3, depth_multiplier=4, name="sep")),
    # SeparableConv2D
    "2d_plain": ((6, 7, 3), lambda: L.SeparableConv2D(4, 3, name="sep")),
    "2d_strided_same_multiplier": ((7, 7, 2), lambda: L.SeparableConv2D(
        3, 3, strides=2, padding="same", depth_multiplier=2, activation="relu", name="sep")),
    "2d_dilated": ((7, 7, 2), lambda: L.SeparableConv2D(3, 2, dilation_rate=(2, 3),
                                                        name="sep")),
    "2d_strided_dilated_same": ((9, 9, 2), lambda: L.SeparableConv2D(
        3, 3, strides=2, dilation_rate=2, padding="same", name="sep")),
    "2d_unequal_strides_dilated": ((8, 9, 3), lambda: L.SeparableConv2D(
        2, 2, strides=(1, 2), dilation_rate=(2, 1), activation="tanh", name="sep")),
    "2d_no_bias": ((6, 6, 3), lambda: L.SeparableConv2D(3, (3, 2), use_bias=False,
                                                        activation="tanh", name="sep")),
    "2d_ghost": ((7, 8, 3), lambda: L.SeparableConv2D(32, 3, strides=3, depth_multiplier=8,
                                                      name="sep")),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_brute_force(name):
    shape, layer = CASES[name]
    x, y = _data(shape)
    plan = check_against_brute_force(_sequential(shape, layer), x, y)
    assert plan["sep"] == RULE


@pytest.mark.parametrize("name", ["1d_strided_dilated", "2d_strided_dilated_same", "2d_ghost"])
def test_forward_equals_layer_call(name):
    shape, make_layer = CASES[name]
    x, _ = _data(shape)
    layer = make_layer()
    want = layer(x)
    rule = rule_for(layer)
    assert rule is not None
    output, (inputs, d), (d_again, p) = rule.forward(layer, tf.constant(x))
    np.testing.assert_allclose(output, want, rtol=1e-5, atol=1e-6)
    assert d is d_again and p.shape == want.shape and inputs.shape == x.shape
    assert d.shape[-1] == x.shape[-1] * layer.depth_multiplier


@pytest.mark.parametrize("rank", [1, 2])
def test_shared_layer_called_twice(rank):
    shape = (8, 3) if rank == 1 else (6, 6, 3)
    x, y = _data(shape)

    def make():
        cls = L.SeparableConv1D if rank == 1 else L.SeparableConv2D
        shared = cls(3, 3, padding="same", depth_multiplier=2, activation="tanh", name="sep")
        inputs = keras.Input(shape)
        h = shared(shared(inputs))
        return keras.Model(inputs, L.Dense(3)(L.Flatten()(h)))

    assert check_against_brute_force(make, x, y)["sep"] == RULE


def test_shared_ghost_twice():
    # One position per call (2 in all), 16 -> 4 pointwise: the ghost norm runs over both
    # calls' positions (2 * (16 + 4) < 16 * 4).
    shape = (2, 2, 4)
    x, y = _data(shape)

    def make():
        shared = L.SeparableConv2D(4, 2, padding="same", strides=2, depth_multiplier=4,
                                   activation="tanh", name="sep")
        inputs = keras.Input(shape)
        h = shared(shared(inputs))
        return keras.Model(inputs, L.Dense(3)(L.Flatten()(h)))

    assert check_against_brute_force(make, x, y)["sep"] == RULE


def test_sample_weights():
    shape, layer = CASES["2d_strided_same_multiplier"]
    x, y = _data(shape)
    weights = np.array([1.0, 0.5, 2.0, 0.0, 1.5, 0.25])
    plan = check_against_brute_force(_sequential(shape, layer), x, y, sample_weight=weights,
                                     kinds=("l2",))
    assert plan["sep"] == RULE


def test_frozen_depthwise_kernel():
    shape = (8, 3)
    x, y = _data(shape)

    def make():
        model = _sequential(shape, lambda: L.SeparableConv1D(4, 3, depth_multiplier=2,
                                                             name="sep"))()
        model.get_layer("sep").depthwise_kernel.trainable = False
        return model

    assert check_against_brute_force(make, x, y)["sep"] == RULE


def test_channels_first_is_declined():
    shape = (3, 6, 6)
    x, y = _data(shape)
    make = _sequential(shape, lambda: L.SeparableConv2D(3, 3, data_format="channels_first",
                                                        activation="tanh", name="sep"))
    plan = check_against_brute_force(make, x, y)
    assert plan["sep"] in ("local", "jacobian")


def test_unequal_strides_without_dilation_declined():
    # The plain CPU depthwise kernel needs equal strides (only oneDNN/GPU run this layer).
    assert rule_for(L.SeparableConv2D(3, 3, strides=(2, 1))) is None
    assert rule_for(L.SeparableConv2D(3, 3, strides=(2, 1), dilation_rate=(1, 2))) is not None
