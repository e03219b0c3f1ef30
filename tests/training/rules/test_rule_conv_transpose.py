"""ConvTransposeRule (Conv1D/2D/3DTranspose): norms and clipped sums equal a brute-force loop."""

import numpy as np
import pytest
import keras
import tensorflow as tf

from rule_check import check_against_brute_force

from tfdp.training.rules import conv_transpose  # noqa: F401  (registers the rule)

L = keras.layers
RULE = "rule:ConvTransposeRule"


def _dilated_transpose_runs() -> bool:
    # Conv*DBackpropInput with dilation > 1 exists only in oneDNN and GPU builds: there the
    # Keras layer itself cannot run on a plain-Eigen CPU build, whatever tfdp does.
    try:
        L.Conv2DTranspose(1, 2, dilation_rate=2)(tf.zeros([1, 3, 3, 1]))
        return True
    except tf.errors.InvalidArgumentError:
        return False


needs_dilated_kernels = pytest.mark.skipif(
    not _dilated_transpose_runs(),
    reason="this TF build has no dilated transposed-convolution kernel (Keras layer fails)")


def _data(shape, n=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n,) + shape).astype("float32")
    return x, rng.integers(0, 3, size=n)


def _sequential(shape, layers):
    return lambda: keras.Sequential([keras.Input(shape), *layers(), L.Flatten(), L.Dense(3)])


# (input shape, layer factory). "narrow" = few filters (the x side of the filter-gradient
# problem is the output gradient, with `filters` channels): one-hot patches and the
# batch-folded depthwise gradients; "ghost" = few input positions.
CASES = {
    "1d_plain": ((5, 2), lambda: L.Conv1DTranspose(3, 3)),
    "1d_same_strided_wide": ((5, 2), lambda: L.Conv1DTranspose(5, 3, strides=2,
                                                                padding="same")),
    "1d_output_padding": ((4, 3), lambda: L.Conv1DTranspose(2, 3, strides=3,
                                                             output_padding=2)),
    "1d_same_output_padding": ((4, 3), lambda: L.Conv1DTranspose(
        2, 3, strides=2, padding="same", output_padding=1)),
    "1d_stride_above_kernel": ((4, 3), lambda: L.Conv1DTranspose(2, 2, strides=3)),
    "1d_no_bias": ((5, 2), lambda: L.Conv1DTranspose(3, 2, use_bias=False)),
    "2d_plain": ((4, 4, 2), lambda: L.Conv2DTranspose(3, 3)),
    "2d_same_strided": ((4, 4, 4), lambda: L.Conv2DTranspose(3, 3, strides=2, padding="same",
                                                              activation="relu")),
    "2d_same_strided_wide": ((4, 4, 4), lambda: L.Conv2DTranspose(5, 3, strides=2,
                                                                   padding="same")),
    "2d_unequal_strides": ((4, 3, 3), lambda: L.Conv2DTranspose(2, (3, 2), strides=(2, 1),
                                                                 padding="same")),
    "2d_unequal_strides_wide": ((3, 4, 3), lambda: L.Conv2DTranspose(4, (2, 3),
                                                                      strides=(1, 3))),
    "2d_output_padding": ((3, 4, 3), lambda: L.Conv2DTranspose(2, 3, strides=2,
                                                                output_padding=1)),
    "2d_same_output_padding": ((3, 3, 3), lambda: L.Conv2DTranspose(
        2, 3, strides=(2, 3), padding="same", output_padding=(0, 2))),
    "2d_same_even_kernel_output_padding": ((3, 3, 2), lambda: L.Conv2DTranspose(
        2, 4, strides=2, padding="same", output_padding=1)),
    "2d_no_bias": ((3, 3, 2), lambda: L.Conv2DTranspose(2, 3, strides=2, use_bias=False,
                                                         activation="tanh")),
    "2d_ghost": ((1, 2, 8), lambda: L.Conv2DTranspose(6, 2)),
    "3d_plain": ((3, 3, 3, 2), lambda: L.Conv3DTranspose(2, 2)),
    "3d_same_strided": ((2, 3, 2, 3), lambda: L.Conv3DTranspose(2, 3, strides=2,
                                                                 padding="same")),
    "3d_wide": ((2, 3, 2, 3), lambda: L.Conv3DTranspose(4, 2, strides=(1, 2, 1))),
    "3d_wide_stride_1": ((2, 3, 2, 3), lambda: L.Conv3DTranspose(4, 2, padding="same")),
    "3d_output_padding": ((2, 2, 2, 2), lambda: L.Conv3DTranspose(
        2, 2, strides=2, output_padding=(1, 0, 1))),
    "3d_no_bias": ((2, 2, 2, 2), lambda: L.Conv3DTranspose(2, 2, use_bias=False)),
    "3d_ghost": ((1, 1, 2, 6), lambda: L.Conv3DTranspose(5, 2)),
}

DILATED = {
    "1d_dilated": ((5, 3), lambda: L.Conv1DTranspose(2, 3, dilation_rate=2)),
    "2d_dilated_same": ((4, 4, 3), lambda: L.Conv2DTranspose(2, 2, dilation_rate=2,
                                                              padding="same")),
    "2d_dilated_wide": ((4, 4, 3), lambda: L.Conv2DTranspose(4, 2, dilation_rate=(2, 1))),
    "3d_dilated": ((3, 3, 3, 2), lambda: L.Conv3DTranspose(2, 2, dilation_rate=2)),
    "3d_dilated_wide_same": ((3, 3, 3, 2), lambda: L.Conv3DTranspose(
        4, 2, dilation_rate=(1, 2, 1), padding="same")),
}


def _check(shape, layer, **kwargs):
    x, y = _data(shape)
    plan = check_against_brute_force(_sequential(shape, lambda: [layer()]), x, y, **kwargs)
    layers = [k for k in plan if "transpose" in k]
    assert layers and all(plan[k] == RULE for k in layers), plan


@pytest.mark.parametrize("name", sorted(CASES))
def test_conv_transpose_matches_brute_force(name):
    _check(*CASES[name])


@needs_dilated_kernels
@pytest.mark.parametrize("name", sorted(DILATED))
def test_dilated_conv_transpose_matches_brute_force(name):
    _check(*DILATED[name])


def test_sample_weights():
    _check((3, 3, 2), lambda: L.Conv2DTranspose(3, 3, strides=2, padding="same"),
           sample_weight=np.array([1.0, 0.5, 2.0, 0.0, 1.5, 3.0]))


def test_sample_weights_conv3d_transpose():
    _check((2, 2, 2, 3), lambda: L.Conv3DTranspose(4, 2, strides=2),
           sample_weight=np.array([1.0, 0.5, 2.0, 0.0, 1.5, 3.0]))


@pytest.mark.parametrize("rank, filters", [(1, 2), (2, 2), (2, 4), (3, 2)],
                         ids=["1d", "2d_narrow", "2d_wide", "3d"])
def test_layer_called_twice_shares_weights(rank, filters):
    shape = {1: (4, filters), 2: (3, 3, filters), 3: (2, 3, 2, filters)}[rank]
    cls = {1: L.Conv1DTranspose, 2: L.Conv2DTranspose, 3: L.Conv3DTranspose}[rank]

    def make():
        inputs = keras.Input(shape)
        shared = cls(filters, 2, strides=2 if rank == 2 else 1, padding="same", name="shared")
        h = shared(shared(inputs))
        return keras.Model(inputs, L.Dense(3)(L.Flatten()(h)))

    x, y = _data(shape)
    assert check_against_brute_force(make, x, y)["shared"] == RULE


def test_called_on_inputs_of_different_sizes():
    def make():
        a, b = keras.Input((1, 2, 4)), keras.Input((3, 3, 4))
        shared = L.Conv2DTranspose(3, 2, strides=2, name="shared")
        h = L.Concatenate()([L.Flatten()(shared(a)), L.Flatten()(shared(b))])
        return keras.Model([a, b], L.Dense(3)(h))

    rng = np.random.default_rng(3)
    x = [rng.normal(size=(5, 1, 2, 4)).astype("float32"),
         rng.normal(size=(5, 3, 3, 4)).astype("float32")]
    y = rng.integers(0, 3, size=5)
    assert check_against_brute_force(make, x, y)["shared"] == RULE


def test_frozen_bias_only_kernel_is_measured():
    shape = (3, 3, 2)

    def make():
        model = _sequential(shape, lambda: [L.Conv2DTranspose(3, 3, strides=2, name="t")])()
        model.get_layer("t").bias.trainable = False
        return model

    x, y = _data(shape)
    assert check_against_brute_force(make, x, y)["t"] == RULE


def test_subclass_overriding_call_is_declined():
    class Scaled(L.Conv2DTranspose):
        def call(self, inputs):
            return 2.0 * super().call(inputs)

    shape = (3, 3, 2)
    x, y = _data(shape)
    plan = check_against_brute_force(
        _sequential(shape, lambda: [Scaled(3, 2, strides=2, name="declined")]), x, y)
    assert plan["declined"] in ("local", "jacobian")
