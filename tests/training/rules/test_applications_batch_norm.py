"""keras.applications backbones with BatchNormalization under make_private: frozen (inference
mode) they are accepted and one step's clipped gradient equals the brute-force loop's;
a BatchNormalization that would train on batch statistics is still refused.

The models are built with weights=None (nothing is downloaded) at 32x32, their smallest
input, once per module; the moving statistics are set away from their initial values, as
pretrained ones are, so that inference mode and training mode differ.
"""

import keras
import numpy as np
import pytest

from rule_check import check_against_brute_force

import tfdp
from tfdp.training.plan import model_layers

L = keras.layers
SIZE = 32
BATCH = 4


def _pretrained_statistics(model, seed=0):
    """Moving statistics away from their initial values; Dropout (EfficientNet's stochastic
    depth) at rate 0, so that the brute-force loop and the batch draw no different masks."""
    rng = np.random.default_rng(seed)
    for layer in model_layers(model):
        if isinstance(layer, L.BatchNormalization):
            shape = layer.moving_mean.shape
            layer.moving_mean.assign(rng.normal(0.0, 0.1, size=shape).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, size=shape).astype("float32"))
        if isinstance(layer, L.Dropout):
            layer.rate = 0.0


def _backbone(name):
    keras.utils.set_random_seed(0)
    base = getattr(keras.applications, name)(include_top=False, weights=None,
                                             input_shape=(SIZE, SIZE, 3), pooling="avg")
    _pretrained_statistics(base)
    return base


def _classifier(base):
    """The keras.applications fine-tuning pattern: base(x, training=False), a new head."""
    x = keras.Input((SIZE, SIZE, 3))
    return keras.Model(x, L.Dense(3, name="head")(base(x, training=False)))


def _data():
    rng = np.random.default_rng(1)
    return rng.uniform(0.0, 255.0, size=(BATCH, SIZE, SIZE, 3)).astype("float32"), \
        np.arange(BATCH) % 3


@pytest.fixture(scope="module", params=["ResNet50V2", "MobileNetV3Small", "EfficientNetV2B0"])
def frozen(request):
    base = _backbone(request.param)
    base.trainable = False
    return _classifier(base)


def test_frozen_backbone_is_accepted_and_its_head_is_on_a_rule(frozen):
    tfdp.make_private(frozen)  # probes the training forward pass: nothing written, no mixing
    assert tfdp.training.gradient_plan(frozen, _data()[0]) == {"head": "rule:DenseRule"}


@pytest.mark.slow
def test_frozen_backbone_clipped_gradient_equals_the_brute_force_loop(frozen):
    x, y = _data()
    plan = check_against_brute_force(lambda: frozen, x, y, kinds=("l2",), rtol=1e-4, atol=1e-6)
    assert plan == {"head": "rule:DenseRule"}


@pytest.fixture(scope="module")
def resnet():
    return _backbone("ResNet50V2")


def _last_block_unfrozen(base, batch_norm_trainable=False):
    """conv5_block3's convolutions (and the head) train; every BatchNormalization frozen
    unless `batch_norm_trainable` (then the block's own BNs train too)."""
    base.trainable = True
    for layer in base.layers:
        in_block = layer.name.startswith("conv5_block3")
        is_bn = isinstance(layer, L.BatchNormalization)
        layer.trainable = in_block and (batch_norm_trainable or not is_bn)
    return _classifier(base)


LAST_BLOCK_PLAN = {"conv5_block3_1_conv": "rule:ConvRule", "conv5_block3_2_conv": "rule:ConvRule",
                   "conv5_block3_3_conv": "rule:ConvRule", "head": "rule:DenseRule"}


def test_resnet_last_block_unfrozen_with_frozen_batch_norm_is_on_rules(resnet):
    model = _last_block_unfrozen(resnet)
    tfdp.make_private(model)
    # Three kernels and 3_conv's bias (1_conv and 2_conv feed a BN: no bias), the head's two.
    assert len(model.trainable_variables) == 6
    assert tfdp.training.gradient_plan(model, _data()[0]) == LAST_BLOCK_PLAN


@pytest.mark.slow
def test_resnet_last_block_clipped_gradient_equals_the_brute_force_loop(resnet):
    model = _last_block_unfrozen(resnet)
    x, y = _data()
    plan = check_against_brute_force(lambda: model, x, y, kinds=("l2", "l1"), rtol=1e-4,
                                     atol=1e-6)
    assert plan == LAST_BLOCK_PLAN


def test_resnet_last_block_with_trainable_batch_norm_is_refused(resnet):
    """base(x, training=False) does not keep them in inference mode in Keras 3: the outer
    model's training=True reaches them, they update their moving statistics, and the probe
    refuses them with the ways out."""
    model = _last_block_unfrozen(resnet, batch_norm_trainable=True)
    with pytest.raises(ValueError, match=r"'conv5_block3_preact_bn'.*fold_batch_norm"):
        tfdp.make_private(model)
