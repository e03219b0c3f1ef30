"""fold_batch_norm and batch_norm_to_group_norm: the two rewrites of a BatchNormalization
that would train on batch statistics; and the refusal that names them."""

import keras
import numpy as np
import pytest

import tfdp
from tfdp.training.plan import model_layers

from rule_check import check_against_brute_force

L = keras.layers


def _pretrained(bn, seed):
    """Statistics and affine far from their initial values, as after pretraining."""
    rng = np.random.default_rng(seed)
    channels = bn.moving_mean.shape
    bn.moving_mean.assign(rng.normal(size=channels).astype("float32"))
    bn.moving_variance.assign(rng.uniform(0.3, 3.0, size=channels).astype("float32"))
    if bn.scale:
        bn.gamma.assign(rng.uniform(0.5, 1.5, size=channels).astype("float32"))
    if bn.center:
        bn.beta.assign(rng.normal(size=channels).astype("float32"))


def _backbone():
    """Every foldable kind, and the cases that must stay: an activation before the BN, an
    output read twice, a BN after an Add, a BN over another axis than the channels."""
    x = keras.Input((6, 6, 2))
    h = L.BatchNormalization(name="bn_conv")(L.Conv2D(4, 3, padding="same", use_bias=False,
                                                      name="conv")(x))
    h = L.BatchNormalization(name="bn_depthwise", epsilon=0.01)(
        L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="depthwise")(h))
    relu = L.Conv2D(8, 1, activation="relu", name="conv_relu")(h)
    h = L.BatchNormalization(name="bn_after_relu", center=False)(relu)
    shared = L.Conv2D(8, 1, name="conv_shared")(h)
    h = L.BatchNormalization(name="bn_shared", scale=False)(shared)
    h = L.Add(name="add")([h, shared])
    h = L.BatchNormalization(name="bn_after_add")(h)
    h = L.BatchNormalization(axis=1, name="bn_other_axis")(L.Conv2D(3, 1, name="conv_3")(h))
    h = L.GlobalAveragePooling2D()(h)
    h = L.BatchNormalization(name="bn_dense")(L.Dense(5, name="dense")(h))
    return keras.Model(x, h, name="backbone")


def _model():
    keras.utils.set_random_seed(3)
    backbone = _backbone()
    for i, layer in enumerate(model_layers(backbone)):
        if isinstance(layer, L.BatchNormalization):
            _pretrained(layer, i)
    x = keras.Input((6, 6, 2))
    return keras.Model(x, L.Dense(3, name="head")(backbone(x)))


def _x(n=5, shape=(6, 6, 2)):
    return np.random.default_rng(0).normal(size=(n,) + shape).astype("float32") * 2


FOLDED = {"bn_conv", "bn_depthwise", "bn_dense"}
KEPT = {"bn_after_relu", "bn_shared", "bn_after_add", "bn_other_axis"}


def _by_name(model):
    return {layer.name: layer for layer in model_layers(model)}


def test_folded_model_computes_the_original_inference_output():
    model = _model()
    before = [w.numpy().copy() for w in model.weights]
    folded = tfdp.training.fold_batch_norm(model)
    x = _x()
    want = np.asarray(model(x, training=False))
    got = np.asarray(folded(x, training=False))
    assert np.abs(want).max() > 0.1
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    layers = _by_name(folded)
    assert {n for n in FOLDED | KEPT if isinstance(layers[n], L.Identity)} == FOLDED
    assert all(isinstance(layers[n], L.BatchNormalization) for n in KEPT)
    assert layers["conv"].use_bias  # a bias added to hold beta - s * mean
    for b, w in zip(before, model.weights):  # the original is untouched
        np.testing.assert_array_equal(b, w.numpy())


def test_a_folded_sequential_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), L.Dense(6, use_bias=False),
                              L.BatchNormalization(), L.Dense(2)])
    _pretrained(model.layers[1], 0)
    folded = tfdp.training.fold_batch_norm(model)
    assert [type(layer).__name__ for layer in folded.layers] == ["Dense", "Identity", "Dense"]
    x = _x(shape=(4,))
    np.testing.assert_allclose(np.asarray(folded(x)), np.asarray(model(x, training=False)),
                               rtol=1e-5, atol=1e-5)


def test_folded_model_trains_privately_with_exact_per_example_gradients():
    """Folding removes the trainable BNs it can; with the rest frozen, make_private accepts
    it, and one step's clipped gradient agrees with the brute-force loop."""
    model = _model()
    with pytest.raises(ValueError, match="fold_batch_norm"):
        tfdp.make_private(model)  # trainable BNs in training mode

    def make():
        folded = tfdp.training.fold_batch_norm(_model())
        for layer in model_layers(folded):
            if isinstance(layer, L.BatchNormalization):
                layer.trainable = False
        return folded

    tfdp.make_private(make())
    plan = check_against_brute_force(make, _x(6), np.arange(6) % 3, rtol=1e-4, atol=1e-5)
    assert plan == {"conv": "rule:ConvRule", "depthwise": "rule:DepthwiseConvRule",
                    "conv_relu": "rule:ConvRule", "conv_shared": "rule:ConvRule",
                    "conv_3": "rule:ConvRule",
                    "dense": "rule:DenseRule", "head": "rule:DenseRule"}


def test_group_norm_conversion_is_accepted_by_make_private():
    model = _model()
    converted = tfdp.training.batch_norm_to_group_norm(model, groups=4)
    layers = _by_name(converted)
    names = FOLDED | KEPT
    assert all(isinstance(layers[n], L.GroupNormalization) for n in names)
    assert not any(isinstance(layer, L.BatchNormalization) for layer in model_layers(converted))
    # The largest divisor of the channels at most 4: 4 channels -> 4, 8 -> 4, 6 rows -> 3, 5 -> 1.
    assert (layers["bn_conv"].groups, layers["bn_depthwise"].groups,
            layers["bn_other_axis"].groups, layers["bn_dense"].groups) == (4, 4, 3, 1)
    assert layers["bn_other_axis"].axis == 1
    original = _by_name(model)
    np.testing.assert_array_equal(layers["bn_conv"].gamma.numpy(),
                                  original["bn_conv"].gamma.numpy())
    np.testing.assert_array_equal(layers["conv"].kernel.numpy(), original["conv"].kernel.numpy())
    private = tfdp.make_private(converted)
    plan = tfdp.training.gradient_plan(private, _x(2))
    assert plan["bn_conv"] == "rule:GroupNormalizationRule"
    assert len(converted.trainable_variables) == len(model.trainable_variables)


def test_subclassed_models_are_refused_with_advice():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = L.Dense(2)

        def call(self, x):
            return self.dense(x)

    net = Net()
    net(_x(1, (3,)))
    with pytest.raises(ValueError, match="subclassed Net.*trainable=False"):
        tfdp.training.fold_batch_norm(net)
    with pytest.raises(ValueError, match="subclassed Net"):
        tfdp.training.batch_norm_to_group_norm(net)


def test_the_refusal_names_every_way_out():
    model = keras.Sequential([keras.Input((3,)), L.Dense(4), L.BatchNormalization(name="bn"),
                              L.Dense(2)])
    with pytest.raises(ValueError) as refused:
        tfdp.make_private(model)
    message = str(refused.value)
    assert message.startswith("Layer 'bn': BatchNormalization in training mode")
    for way_out in ("trainable = False", "tfdp.training.fold_batch_norm(model)",
                    "tfdp.training.batch_norm_to_group_norm(model)", "GroupNormalization"):
        assert way_out in message
