"""ConvRule (Conv1D/Conv2D/Conv3D): per-example norms and clipped sums equal a brute-force loop."""

import numpy as np
import pytest
import keras
import tensorflow as tf

from rule_check import check_against_brute_force

from tfdp.training.rules import conv  # noqa: F401  (registers the rule)
from tfdp.training.rules.registry import rule_for

L = keras.layers
RULE = "rule:ConvRule"


def _data(shape, n=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n,) + shape).astype("float32")
    return x, rng.integers(0, 3, size=n)


def _sequential(shape, layers):
    return lambda: keras.Sequential([keras.Input(shape), *layers(), L.Flatten(), L.Dense(3)])


# (input shape, layer factory). Narrow inputs (<= 3 channels) take the one-hot patches and
# the batch-folded depthwise gradients, wide ones extract_patches/extract_volume_patches;
# few output positions take the ghost norm.
CASES = {
    # Conv1D
    "1d_plain_narrow": ((7, 2), lambda: L.Conv1D(4, 3)),
    "1d_wide": ((7, 5), lambda: L.Conv1D(4, 3)),
    "1d_same_strided": ((8, 2), lambda: L.Conv1D(3, 3, strides=2, padding="same")),
    "1d_strided_wide": ((9, 4), lambda: L.Conv1D(3, 2, strides=3)),
    "1d_causal": ((7, 2), lambda: L.Conv1D(4, 3, padding="causal", activation="relu")),
    "1d_causal_dilated_wide": ((9, 4), lambda: L.Conv1D(3, 3, padding="causal",
                                                         dilation_rate=2)),
    "1d_dilated_narrow": ((9, 1), lambda: L.Conv1D(3, 2, dilation_rate=3, padding="same")),
    "1d_no_bias": ((7, 2), lambda: L.Conv1D(4, 3, use_bias=False)),
    "1d_ghost": ((3, 4), lambda: L.Conv1D(6, 2)),
    # Conv2D
    "2d_plain_narrow": ((6, 6, 2), lambda: L.Conv2D(4, 3)),
    "2d_wide": ((6, 6, 5), lambda: L.Conv2D(4, 3, padding="same")),
    "2d_strided_same": ((7, 7, 2), lambda: L.Conv2D(3, 3, strides=2, padding="same")),
    "2d_unequal_strides_narrow": ((7, 6, 1), lambda: L.Conv2D(3, (3, 2), strides=(2, 1))),
    "2d_unequal_strides_wide": ((7, 6, 4), lambda: L.Conv2D(3, (2, 3), strides=(1, 2),
                                                             padding="same")),
    "2d_dilated_narrow": ((7, 7, 2), lambda: L.Conv2D(3, 2, dilation_rate=2)),
    "2d_dilated_wide": ((7, 7, 4), lambda: L.Conv2D(3, 2, dilation_rate=(2, 3),
                                                     padding="same")),
    "2d_no_bias": ((6, 6, 2), lambda: L.Conv2D(3, 3, use_bias=False, activation="tanh")),
    "2d_ghost": ((3, 3, 4), lambda: L.Conv2D(8, 2)),
    # Conv3D
    "3d_plain_narrow": ((4, 4, 4, 1), lambda: L.Conv3D(3, 2)),
    "3d_wide": ((4, 4, 4, 4), lambda: L.Conv3D(3, 2, padding="same")),
    "3d_strided": ((5, 5, 4, 2), lambda: L.Conv3D(3, (2, 3, 2), strides=(2, 1, 2),
                                                   padding="same")),
    "3d_strided_valid_wide": ((5, 5, 5, 4), lambda: L.Conv3D(2, 2, strides=2)),
    # The dilated Conv3D (space-to-batch around a plain convolution) rounds differently for a
    # batch of 6 and of 1 (logits differ by ~1e-6 in the layer's own call), which a sum that
    # cancels to 0.2 of its scale shows as 3e-6: a float32 tolerance, not the rule.
    "3d_dilated": ((5, 5, 5, 2), lambda: L.Conv3D(3, 2, dilation_rate=2, padding="same"),
                   dict(atol=1e-5)),
    "3d_dilated_wide_valid": ((5, 5, 5, 4), lambda: L.Conv3D(2, 2, dilation_rate=(1, 2, 2))),
    "3d_no_bias": ((4, 4, 4, 2), lambda: L.Conv3D(3, 2, use_bias=False)),
    "3d_ghost": ((2, 2, 2, 4), lambda: L.Conv3D(6, 2)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_conv_matches_brute_force(name):
    shape, layer, *tolerance = CASES[name]
    x, y = _data(shape)
    plan = check_against_brute_force(_sequential(shape, lambda: [layer()]), x, y,
                                     **(tolerance[0] if tolerance else {}))
    conv_layers = [k for k in plan if k.startswith("conv")]
    assert conv_layers and all(plan[k] == RULE for k in conv_layers), plan


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_layer_called_twice_shares_weights(rank):
    shape = {1: (6, 2), 2: (5, 5, 2), 3: (4, 4, 3, 2)}[rank]
    cls = {1: L.Conv1D, 2: L.Conv2D, 3: L.Conv3D}[rank]

    def make():
        inputs = keras.Input(shape)
        shared = cls(2, 2, padding="same", name="shared")
        h = shared(shared(inputs))  # 2 filters in, 2 out: the layer can be applied again
        return keras.Model(inputs, L.Dense(3)(L.Flatten()(h)))

    x, y = _data(shape)
    assert check_against_brute_force(make, x, y)["shared"] == RULE


@pytest.mark.parametrize("channels", [2, 5], ids=["narrow", "wide"])
def test_called_twice_on_different_inputs_ghost_and_materialized(channels):
    def make():
        a, b = keras.Input((3, 3, channels)), keras.Input((5, 5, channels))
        shared = L.Conv2D(7, 2, name="shared")
        h = L.Concatenate()([L.Flatten()(shared(a)), L.Flatten()(shared(b))])
        return keras.Model([a, b], L.Dense(3)(h))

    rng = np.random.default_rng(3)
    x = [rng.normal(size=(5, 3, 3, channels)).astype("float32"),
         rng.normal(size=(5, 5, 5, channels)).astype("float32")]
    y = rng.integers(0, 3, size=5)
    assert check_against_brute_force(make, x, y)["shared"] == RULE


def test_sample_weights():
    shape = (6, 6, 2)
    x, y = _data(shape)
    plan = check_against_brute_force(
        _sequential(shape, lambda: [L.Conv2D(3, 3, strides=2), L.Conv2D(2, 2)]),
        x, y, sample_weight=np.array([1.0, 0.5, 2.0, 0.0, 1.5, 3.0]))
    assert [plan[k] for k in plan if k.startswith("conv")] == [RULE, RULE]


def test_sample_weights_conv3d():
    shape = (4, 4, 4, 3)
    x, y = _data(shape)
    plan = check_against_brute_force(_sequential(shape, lambda: [L.Conv3D(2, 2)]), x, y,
                                     sample_weight=np.array([1.0, 0.5, 2.0, 0.0, 1.5, 3.0]))
    assert plan["conv3d"] == RULE


def test_frozen_kernel_only_bias_is_measured():
    shape = (6, 6, 2)

    def make():
        model = _sequential(shape, lambda: [L.Conv2D(3, 3, name="c")])()
        model.get_layer("c").kernel.trainable = False
        return model

    x, y = _data(shape)
    assert check_against_brute_force(make, x, y)["c"] == RULE


# Grouped convolutions (kernel [*k, c_in/G, c_out]): the rule, not the generic fallback (whose
# vectorized VJP needs a grouped filter-gradient kernel plain-Eigen CPU builds lack).
GROUPED_CASES = {
    "1d_g2_narrow": ((7, 2), lambda: L.Conv1D(4, 3, groups=2)),
    "1d_g4_strided": ((9, 8), lambda: L.Conv1D(4, 2, strides=2, groups=4)),
    "1d_g2_causal_dilated": ((9, 4), lambda: L.Conv1D(4, 3, padding="causal", dilation_rate=2,
                                                       groups=2, activation="relu")),
    "1d_g2_ghost": ((3, 8), lambda: L.Conv1D(16, 2, groups=2)),
    "2d_g2_narrow": ((6, 6, 2), lambda: L.Conv2D(4, 3, groups=2)),
    "2d_g2": ((6, 6, 4), lambda: L.Conv2D(4, 3, groups=2)),
    "2d_g4_strided_same": ((7, 7, 8), lambda: L.Conv2D(8, 3, strides=2, padding="same",
                                                         groups=4)),
    "2d_g2_unequal_strides_narrow": ((7, 6, 2), lambda: L.Conv2D(4, (3, 2), strides=(2, 1),
                                                                   groups=2)),
    "2d_g2_dilated_no_bias": ((7, 7, 4), lambda: L.Conv2D(4, 2, dilation_rate=(2, 3),
                                                            padding="same", groups=2,
                                                            use_bias=False)),
    "2d_g4_ghost": ((3, 3, 8), lambda: L.Conv2D(16, 2, groups=4)),
    "3d_g2": ((4, 4, 4, 4), lambda: L.Conv3D(4, 2, padding="same", groups=2)),
    "3d_g4_strided": ((5, 5, 4, 8), lambda: L.Conv3D(4, (2, 3, 2), strides=(2, 1, 2),
                                                      groups=4)),
    "3d_g2_dilated": ((5, 5, 5, 4), lambda: L.Conv3D(2, 2, dilation_rate=(1, 2, 2), groups=2)),
    "3d_g2_no_bias_narrow": ((4, 4, 4, 2), lambda: L.Conv3D(4, 2, groups=2, use_bias=False)),
    "3d_g2_ghost": ((2, 2, 2, 8), lambda: L.Conv3D(16, 2, groups=2)),
}


@pytest.mark.slow  # grouped convs compile with XLA in every trace (~10 s each)
@pytest.mark.parametrize("name", sorted(GROUPED_CASES))
def test_grouped_conv_matches_brute_force(name):
    shape, layer, *tolerance = GROUPED_CASES[name]
    x, y = _data(shape)
    plan = check_against_brute_force(_sequential(shape, lambda: [layer()]), x, y,
                                     **(tolerance[0] if tolerance else {}))
    conv_layers = [k for k in plan if k.startswith("conv")]
    assert conv_layers and all(plan[k] == RULE for k in conv_layers), plan


@pytest.mark.slow  # grouped convs compile with XLA in every trace (~10 s each)
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_grouped_layer_called_twice_shares_weights(rank):
    shape = {1: (6, 4), 2: (5, 5, 4), 3: (4, 4, 3, 4)}[rank]
    cls = {1: L.Conv1D, 2: L.Conv2D, 3: L.Conv3D}[rank]

    def make():
        inputs = keras.Input(shape)
        shared = cls(4, 2, padding="same", groups=2, name="shared")
        h = shared(shared(inputs))
        return keras.Model(inputs, L.Dense(3)(L.Flatten()(h)))

    x, y = _data(shape)
    assert check_against_brute_force(make, x, y)["shared"] == RULE


@pytest.mark.slow  # grouped convs compile with XLA in every trace (~10 s each)
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_grouped_sample_weights(rank):
    shape = {1: (8, 4), 2: (6, 6, 4), 3: (4, 4, 4, 4)}[rank]
    cls = {1: L.Conv1D, 2: L.Conv2D, 3: L.Conv3D}[rank]
    x, y = _data(shape)
    plan = check_against_brute_force(
        _sequential(shape, lambda: [cls(4, 2, strides=2, groups=2), cls(4, 2, groups=4)]),
        x, y, sample_weight=np.array([1.0, 0.5, 2.0, 0.0, 1.5, 3.0]))
    assert [plan[k] for k in plan if k.startswith("conv")] == [RULE, RULE]


@pytest.mark.slow  # grouped convs compile with XLA in every trace (~10 s each)
@pytest.mark.parametrize("name", ["1d_g2_causal_dilated", "2d_g4_strided_same", "3d_g4_strided"])
def test_grouped_forward_equals_the_layers_call(name):
    shape, make_layer = GROUPED_CASES[name][:2]
    layer = make_layer()
    x = tf.constant(_data(shape)[0])
    layer(x)
    rule = rule_for(layer)
    assert isinstance(rule, conv.ConvRule)
    own = tf.function(lambda t: layer(t))(x)
    output, _, _ = tf.function(lambda t: rule.forward(layer, t))(x)
    np.testing.assert_array_equal(output.numpy(), own.numpy())


def test_overridden_convolution_op_is_declined():
    class Scaled(L.Conv2D):
        def convolution_op(self, inputs, kernel):
            return super().convolution_op(inputs, 2.0 * kernel)

    shape = (6, 6, 2)
    x, y = _data(shape)
    plan = check_against_brute_force(_sequential(shape, lambda: [Scaled(3, 3, name="declined")]),
                                     x, y)
    assert plan["declined"] in ("local", "jacobian")


def test_lora_takes_its_rule_and_grouped_lora_is_declined():
    # Keras's LoRA (more cases in test_rule_lora.py) takes the LoRA variant of the rule; with
    # groups, A B mixes the groups' channels in a way it does not measure: the fallback (whose
    # grouped filter gradient needs oneDNN on CPU, so it is not run here).
    shape = (6, 6, 2)

    def make(groups):
        def build():
            model = _sequential(shape, lambda: [L.Conv2D(4, 3, groups=groups, name="c")])()
            model.get_layer("c").enable_lora(2, b_initializer="glorot_uniform")
            return model
        return build

    x, y = _data(shape)
    assert check_against_brute_force(make(1), x, y)["c"] == "rule:ConvLoraRule"
    assert rule_for(make(2)().get_layer("c")) is None


GEOMETRIES = [
    conv.ConvGeometry((3,), (1,), (1,), "SAME"),
    conv.ConvGeometry((2,), (3,), (1,), "VALID"),
    conv.ConvGeometry((2,), (1,), (3,), "SAME"),
    conv.ConvGeometry((3, 2), (1, 1), (1, 1), "SAME"),
    conv.ConvGeometry((2, 3), (2, 1), (1, 1), "VALID"),
    conv.ConvGeometry((2, 2), (1, 1), (2, 3), "SAME"),
    conv.ConvGeometry((2, 3, 2), (1, 1, 1), (1, 1, 1), "SAME"),
    conv.ConvGeometry((2, 2, 3), (2, 1, 2), (1, 1, 1), "SAME"),
    conv.ConvGeometry((2, 2, 2), (1, 1, 1), (2, 1, 2), "VALID"),
    conv.ConvGeometry((3, 2, 2), (1, 1, 1), (1, 2, 2), "SAME"),
]


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
@pytest.mark.parametrize("channels", [2, 4], ids=["narrow", "wide"])
def test_patch_extractors_agree_exactly(geometry, channels):
    """One-hot convolution, strided slices and the patch ops give the same patches, also
    when the spatial shape is unknown when tracing (then no slicing)."""
    shape = (3,) + (7, 6, 5)[:geometry.rank] + (channels,)
    x = tf.constant(np.random.default_rng(0).normal(size=shape).astype("float32"))
    unit = geometry.with_leading_unit_axis() if geometry.rank == 1 else geometry
    x_unit = x[:, None] if geometry.rank == 1 else x
    reference = conv.flatten_positions(conv._one_hot_patches(unit, x_unit))  # noqa: SLF001
    got = [conv.patches(geometry, x)]
    sliced = conv._sliced_patches(unit, x_unit)  # noqa: SLF001
    got.append(conv.flatten_positions(sliced))
    if not geometry.dilated and geometry.rank == 3:
        got.append(conv.flatten_positions(tf.extract_volume_patches(
            x, [1, *geometry.kernel_size, 1], [1, *geometry.strides, 1], geometry.padding)))
    dynamic = tf.function(lambda t: conv.patches(geometry, t), input_signature=[
        tf.TensorSpec([None] * (geometry.rank + 1) + [channels], tf.float32)])
    got.append(dynamic(x))
    for patches in got:
        np.testing.assert_array_equal(patches.numpy(), reference.numpy())
