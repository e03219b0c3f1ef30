"""Tests for the model builders in models/: shapes, logits, no BatchNorm, residual connections."""

import numpy as np
import pytest
import keras
import tensorflow as tf

from tfdp import models
from models import build_model

# (name, input_shape, num_classes) covering every builder in the registry.
CASES = [
    ("pneumonia_cnn", (32, 32, 1), 2),
    ("tutorial_cnn", (28, 28, 1), 10),
    ("digits_cnn", (8, 8, 1), 10),
    ("mlp", (30,), 2),
    ("resnet", (16, 16, 1), 3),
    ("linear", (8, 8, 1), 10),
    ("normalized_linear", (8, 8, 1), 10),
    ("pretrained_linear", (8, 8, 1), 10),
    ("prior_linear", (8, 8, 1), 10),
    ("prior_linear", (30,), 2),
    ("prior_last_blocks", (8, 8, 1), 10),
    ("prior_lora", (8, 8, 1), 10),
]


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def test_cases_cover_every_registered_model():
    # The keras.applications backbones hold frozen BatchNormalization (test_backbones.py).
    backbones = {name for name in models.available_models() if name.startswith("backbone:")}
    assert backbones == {f"backbone:{name}" for name in models.BACKBONES}
    assert {name for name, _, _ in CASES} == set(models.available_models()) - backbones


@pytest.mark.parametrize("name,input_shape,num_classes", CASES)
def test_builder_outputs_logits_of_the_right_shape_without_batchnorm(name, input_shape, num_classes):
    keras.utils.set_random_seed(0)
    model = build_model(name, input_shape, num_classes)
    assert not any(
        isinstance(layer, keras.layers.BatchNormalization) for layer in _all_layers(model)
    )
    x = np.random.default_rng(0).random((5,) + input_shape).astype(np.float32)
    out = model(x, training=False).numpy()
    assert out.shape == (5, num_classes)
    assert np.all(np.isfinite(out))
    # Logits, not probabilities: rows are not constrained to sum to 1 nor to [0, 1].
    assert not np.allclose(out.sum(axis=1), 1.0, atol=1e-3) or out.min() < 0 or out.max() > 1
    assert model.layers[-1].get_config().get("activation") in (None, "linear")


def test_tutorial_cnn_matches_tf_privacy_tutorial_architecture():
    model = build_model("tutorial_cnn", (28, 28, 1), 10)
    # Weights counted by hand from the tutorial's layers:
    # conv 8x8x1x16+16, conv 4x4x16x32+32, 28->14 (same, s2)->13 (pool 2,1)->5 (valid 4, s2)->4,
    # dense 4*4*32 x 32 + 32, dense 32x10+10.
    expected = (8 * 8 * 1 * 16 + 16) + (4 * 4 * 16 * 32 + 32) + (4 * 4 * 32 * 32 + 32) + (32 * 10 + 10)
    assert model.count_params() == expected
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    assert [(c.filters, c.kernel_size, c.strides, c.padding) for c in convs] == [
        (16, (8, 8), (2, 2), "same"), (32, (4, 4), (2, 2), "valid"),
    ]


def test_resnet_has_working_residual_connections():
    keras.utils.set_random_seed(1)
    model = build_model("resnet", (16, 16, 1), 4, normalization="none")
    adds = [l for l in model.layers if isinstance(l, keras.layers.Add)]
    assert len(adds) == 3  # one per block: 3 stages x 1 block
    # Zero the last convolution of every residual branch: F(x) = 0. Only the skip
    # connections then carry the input forward, so the output must still depend on it.
    for layer in model.layers:
        if layer.name.endswith("_conv2"):
            layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    rng = np.random.default_rng(0)
    a = model(rng.random((1, 16, 16, 1)).astype(np.float32)).numpy()
    b = model(rng.random((1, 16, 16, 1)).astype(np.float32)).numpy()
    assert not np.allclose(a, b)


def test_resnet_residual_layer_hook_is_applied_to_every_branch():
    seen = []

    def factory(channels, name):
        seen.append(channels)
        return keras.layers.Lambda(lambda t: 0.0 * t, name=name)

    model = build_model("resnet", (8, 8, 1), 2, stage_filters=(4, 8), blocks_per_stage=2,
                        residual_layer=factory)
    assert seen == [4, 4, 8, 8]
    assert any(isinstance(l, keras.layers.GroupNormalization) for l in model.layers)


def test_auto_model_and_errors():
    assert build_model("auto", (8, 8, 1), 10).name == "digits_cnn"
    assert build_model("auto", (30,), 2).name == "mlp"
    assert build_model("auto", (32, 32, 1), 2).name == "pneumonia_cnn"
    with pytest.raises(ValueError, match="Unknown model 'vgg'.*digits_cnn"):
        build_model("vgg", (8, 8, 1), 10)
    with pytest.raises(ValueError, match="digits_cnn"):
        build_model("tutorial_cnn", (8, 8, 1), 10)
    with pytest.raises(ValueError, match="mlp"):
        build_model("pneumonia_cnn", (30,), 2)
    with pytest.raises(ValueError, match="normalization"):
        build_model("resnet", (8, 8, 1), 2, normalization="batch")


def test_normalized_linear_standardizes_each_example_on_its_own():
    keras.utils.set_random_seed(0)
    model = build_model("normalized_linear", (8, 8, 1), 10)
    model.layers[-1].kernel.assign(np.random.default_rng(1).normal(size=(64, 10)))
    x = np.random.default_rng(2).random((4, 8, 8, 1)).astype(np.float32)
    out = model(x).numpy()
    # An affine change of one example's pixels changes nothing; other examples do not matter.
    np.testing.assert_allclose(model(3.0 * x + 0.5).numpy(), out, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(model(x[:1]).numpy(), out[:1], rtol=1e-5, atol=1e-6)
    assert not model.layers[-2].trainable_weights  # no statistics or parameters to learn
    assert not np.any(build_model("linear", (8, 8, 1), 10)(x).numpy())  # starts from zero
