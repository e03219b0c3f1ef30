"""DepthwiseConvRule (DepthwiseConv1D/2D): per-example norms and clipped sums vs a brute force."""

import numpy as np
import pytest
import keras
import tensorflow as tf

from rule_check import check_against_brute_force

from tfdp.training.rules import depthwise_conv  # noqa: F401  (registers the rule)
from tfdp.training.rules.registry import rule_for

L = keras.layers
RULE = "rule:DepthwiseConvRule"


def _data(shape, n=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n,) + shape).astype("float32")
    return x, rng.integers(0, 3, size=n)


def _sequential(shape, layer):
    return lambda: keras.Sequential([keras.Input(shape), layer(), L.Flatten(), L.Dense(3)])


# (input shape, layer factory). Dilation takes the tape gradient of Keras's own forward
# (space-to-batch); stride with dilation takes Keras's stride-1-then-subsample decomposition.
CASES = {
    # DepthwiseConv1D
    "1d_plain": ((8, 3), lambda: L.DepthwiseConv1D(3, name="dw")),
    "1d_multiplier_2_same": ((8, 3), lambda: L.DepthwiseConv1D(3, depth_multiplier=2,
                                                                padding="same", name="dw")),
    "1d_strided": ((9, 2), lambda: L.DepthwiseConv1D(3, strides=2, activation="tanh", name="dw")),
    "1d_strided_same": ((8, 2), lambda: L.DepthwiseConv1D(2, strides=3, padding="same",
                                                          depth_multiplier=2, name="dw")),
    "1d_dilated": ((9, 2), lambda: L.DepthwiseConv1D(3, dilation_rate=2, name="dw")),
    "1d_dilated_same_no_bias": ((9, 3), lambda: L.DepthwiseConv1D(
        3, dilation_rate=3, padding="same", use_bias=False, name="dw")),
    "1d_strided_dilated": ((11, 2), lambda: L.DepthwiseConv1D(
        3, strides=2, dilation_rate=2, padding="same", depth_multiplier=2, name="dw")),
    # DepthwiseConv2D
    "2d_plain": ((6, 7, 3), lambda: L.DepthwiseConv2D(3, name="dw")),
    "2d_multiplier_2": ((6, 6, 2), lambda: L.DepthwiseConv2D((3, 2), depth_multiplier=2,
                                                             name="dw")),
    "2d_strided_same": ((7, 7, 2), lambda: L.DepthwiseConv2D(3, strides=2, padding="same",
                                                             activation="relu", name="dw")),
    "2d_strided_valid_multiplier": ((8, 7, 2), lambda: L.DepthwiseConv2D(
        2, strides=2, depth_multiplier=3, name="dw")),
    "2d_dilated": ((7, 7, 2), lambda: L.DepthwiseConv2D(2, dilation_rate=2, name="dw")),
    "2d_dilated_unequal_same": ((7, 8, 2), lambda: L.DepthwiseConv2D(
        3, dilation_rate=(2, 3), padding="same", depth_multiplier=2, name="dw")),
    "2d_no_bias": ((6, 6, 3), lambda: L.DepthwiseConv2D(3, use_bias=False, activation="tanh",
                                                        name="dw")),
    "2d_strided_dilated": ((9, 9, 2), lambda: L.DepthwiseConv2D(
        3, strides=2, dilation_rate=2, padding="same", depth_multiplier=2, name="dw")),
    "2d_unequal_strides_dilated": ((8, 9, 3), lambda: L.DepthwiseConv2D(
        2, strides=(1, 2), dilation_rate=(2, 1), activation="tanh", name="dw")),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_brute_force(name):
    shape, layer = CASES[name]
    x, y = _data(shape)
    plan = check_against_brute_force(_sequential(shape, layer), x, y)
    assert plan["dw"] == RULE


@pytest.mark.parametrize("name", ["1d_strided_dilated", "2d_dilated_unequal_same",
                                  "2d_strided_same"])
def test_forward_equals_layer_call(name):
    shape, make_layer = CASES[name]
    x, _ = _data(shape)
    layer = make_layer()
    want = layer(x)
    rule = rule_for(layer)
    assert rule is not None
    output, a, z = rule.forward(layer, tf.constant(x))
    np.testing.assert_allclose(output, want, rtol=1e-6, atol=1e-6)
    assert a.shape == x.shape and z.shape == want.shape


@pytest.mark.parametrize("rank", [1, 2])
def test_shared_layer_called_twice(rank):
    shape = (8, 2) if rank == 1 else (6, 6, 2)
    x, y = _data(shape)

    def make():
        cls = L.DepthwiseConv1D if rank == 1 else L.DepthwiseConv2D
        shared = cls(3, padding="same", activation="tanh", name="dw")
        inputs = keras.Input(shape)
        h = shared(shared(inputs))
        return keras.Model(inputs, L.Dense(3)(L.Flatten()(h)))

    assert check_against_brute_force(make, x, y)["dw"] == RULE


def test_shared_dilated_strided_twice():
    shape = (9, 9, 3)
    x, y = _data(shape)

    def make():
        shared = L.DepthwiseConv2D(3, strides=2, dilation_rate=2, padding="same",
                                   activation="tanh", name="dw")
        inputs = keras.Input(shape)
        h = shared(shared(inputs))
        return keras.Model(inputs, L.Dense(3)(L.Flatten()(h)))

    assert check_against_brute_force(make, x, y)["dw"] == RULE


def test_sample_weights():
    shape, layer = CASES["2d_multiplier_2"]
    x, y = _data(shape)
    weights = np.array([1.0, 0.5, 2.0, 0.0, 1.5, 0.25])
    plan = check_against_brute_force(_sequential(shape, layer), x, y, sample_weight=weights,
                                     kinds=("l2",))
    assert plan["dw"] == RULE


def test_frozen_kernel_trains_bias_only():
    shape = (8, 3)
    x, y = _data(shape)

    def make():
        model = _sequential(shape, lambda: L.DepthwiseConv1D(3, depth_multiplier=2,
                                                             name="dw"))()
        model.get_layer("dw").kernel.trainable = False
        return model

    assert check_against_brute_force(make, x, y)["dw"] == RULE


def test_channels_first_is_declined():
    shape = (3, 6, 6)
    x, y = _data(shape)
    make = _sequential(shape, lambda: L.DepthwiseConv2D(3, data_format="channels_first",
                                                        activation="tanh", name="dw"))
    plan = check_against_brute_force(make, x, y)
    assert plan["dw"] in ("local", "jacobian")


def test_unequal_strides_without_dilation_declined():
    # The plain CPU depthwise kernel needs equal strides (only oneDNN/GPU run this layer).
    layer = L.DepthwiseConv2D(3, strides=(1, 2))
    layer.build((None, 6, 6, 2))
    assert rule_for(layer) is None
    assert rule_for(L.DepthwiseConv1D(3, strides=2)) is not None


# Large kernels on few positions under oneDNN take the shifted products (depthwise_conv.py);
# these cases force that path, whatever the backend, against the brute-force loop.
SHIFTED_CASES = {
    "1d_shifted_same": ((7, 3), lambda: L.DepthwiseConv1D(5, padding="same", name="dw")),
    "2d_shifted_same": ((4, 4, 3), lambda: L.DepthwiseConv2D((5, 4), padding="same", name="dw")),
    "2d_shifted_strided_multiplier": ((7, 8, 2), lambda: L.DepthwiseConv2D(
        (3, 4), strides=2, padding="same", depth_multiplier=2, activation="tanh", name="dw")),
    "2d_shifted_valid_strided": ((9, 9, 2), lambda: L.DepthwiseConv2D(
        5, strides=2, use_bias=False, name="dw")),
}


@pytest.fixture
def shifted_products(monkeypatch):
    calls = []

    def always(layer, g, kernel_size):
        calls.append(layer.name)
        return True
    monkeypatch.setattr(depthwise_conv, "_use_shifted_products", always)
    return calls


@pytest.mark.parametrize("name", sorted(SHIFTED_CASES))
def test_shifted_products_match_the_brute_force_loop(name, shifted_products):
    shape, layer = SHIFTED_CASES[name]
    x, y = _data(shape)
    plan = check_against_brute_force(_sequential(shape, layer), x, y)
    assert plan["dw"] == RULE and "dw" in shifted_products


@pytest.mark.parametrize("name", sorted(SHIFTED_CASES))
def test_shifted_products_equal_the_native_filter_gradient(name):
    shape, factory = SHIFTED_CASES[name]
    layer = factory()
    layer.build((None,) + shape)
    rng = np.random.default_rng(3)
    a = tf.constant(rng.normal(size=(4,) + shape).astype("float32"))
    g = tf.constant(rng.normal(size=layer.compute_output_shape((4,) + shape)).astype("float32"))
    native = depthwise_conv.per_example_depthwise_gradients(
        layer, a, g, layer.kernel_size, layer.depth_multiplier)
    shifted = depthwise_conv.shifted_products_gradients(
        layer, a, g, layer.kernel_size, layer.depth_multiplier)
    np.testing.assert_allclose(shifted.numpy(), native.numpy(), rtol=1e-5, atol=1e-5)


def test_shifted_products_are_chosen_for_large_kernels_on_few_positions(monkeypatch):
    monkeypatch.setattr(depthwise_conv, "onednn_enabled", lambda: True)
    last = L.DepthwiseConv2D(5, padding="same")  # MobileNetV3's last: 5x5 on 4x4 positions
    early = L.DepthwiseConv2D(5, strides=2, padding="same")  # 5x5 on 16x16 positions
    small = L.DepthwiseConv2D(3, padding="same")
    choose = depthwise_conv._use_shifted_products
    assert choose(last, tf.zeros([2, 4, 4, 8]), (5, 5))
    assert not choose(early, tf.zeros([2, 16, 16, 8]), (5, 5))
    assert not choose(small, tf.zeros([2, 4, 4, 8]), (3, 3))
    monkeypatch.setattr(depthwise_conv, "onednn_enabled", lambda: False)
    assert not choose(last, tf.zeros([2, 4, 4, 8]), (5, 5))
