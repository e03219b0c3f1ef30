"""keras.applications backbones under a DP head: blocks, local weights, fine-tuning modes, plans.

Random weights only (weights=None): nothing is downloaded. MobileNetV3Small (the cheapest,
about a second to build) runs by default; the other backbones are `slow`.
"""

import h5py
import keras
import numpy as np
import pytest
from keras.src.applications import convnext, efficientnet_v2, mobilenet_v3, resnet
from keras.src.legacy.saving import legacy_h5_format

import tfdp
from tfdp import models
from tfdp.models.backbones import (BACKBONES, backbone_blocks, backbone_classifier,
                                   backbone_statement, build_backbone)
from tfdp.training import split_frozen_prefix

CHEAP = "mobilenetv3small"
SLOW = [pytest.param(name, marks=pytest.mark.slow) for name in BACKBONES if name != CHEAP]
ALL = [CHEAP] + SLOW
SHAPE = (32, 32, 1)  # the smallest input every backbone takes; grayscale like the X-rays


def _x(n=4, shape=SHAPE, seed=0):
    return np.random.default_rng(seed).uniform(size=(n,) + shape).astype("float32")


def _classifier(name=CHEAP, **kwargs):
    """A classifier with random weights (the warning that says so is checked each time)."""
    with pytest.warns(UserWarning, match="NOT pretrained"):
        return backbone_classifier(name, SHAPE, 2, **kwargs)


def _features(model, x):
    """The backbone's pooled features (the head is zero at first, so logits say nothing)."""
    return np.asarray(keras.Model(model.input, model.get_layer("head").input)(x))


def test_weights_files_are_keras_applications_own():
    """File names and URLs as keras.applications builds them (its hashes know each name)."""
    table = {
        "resnet50v2": (resnet.BASE_WEIGHTS_PATH, "resnet50v2", resnet.WEIGHTS_HASHES,
                       "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        "mobilenetv3small": (mobilenet_v3.BASE_WEIGHT_PATH, "small_224_1.0_float",
                             mobilenet_v3.WEIGHTS_HASHES,
                             "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"),
        "mobilenetv3large": (mobilenet_v3.BASE_WEIGHT_PATH, "large_224_1.0_float",
                             mobilenet_v3.WEIGHTS_HASHES,
                             "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5"),
        "efficientnetv2b0": (efficientnet_v2.BASE_WEIGHTS_PATH, "b0",
                             efficientnet_v2.WEIGHTS_HASHES, "efficientnetv2-b0_notop.h5"),
        "convnexttiny": (convnext.BASE_WEIGHTS_PATH, "convnext_tiny", convnext.WEIGHTS_HASHES,
                         "convnext_tiny_notop.h5"),
    }
    assert set(table) == set(BACKBONES)
    for name, (base, key, hashes, file_name) in table.items():
        spec = BACKBONES[name]
        assert key in hashes
        assert spec.weights_file == file_name
        assert spec.weights_url == base + file_name
        assert spec.weights_url.startswith(
            "https://storage.googleapis.com/tensorflow/keras-applications/")


@pytest.mark.parametrize("name", ALL)
def test_blocks_cover_every_weighted_layer_once(name):
    backbone = build_backbone(name, (32, 32, 3))
    blocks = backbone_blocks(name, backbone)
    assert len(blocks) == BACKBONES[name].num_blocks + 1  # the stem, then the blocks
    listed = [layer for block in blocks for layer in block]
    assert len(listed) == len({id(layer) for layer in listed})
    weighted = [layer for layer in backbone.layers if layer.weights]
    assert {id(layer) for layer in weighted} <= {id(layer) for layer in listed}
    assert sum(len(layer.weights) for layer in listed) == len(backbone.weights)
    # Every block but the stem holds weights; the stem's first weighted layer is the first conv.
    assert all(any(layer.weights for layer in block) for block in blocks)
    assert any(layer.weights for layer in blocks[0])


def test_block_boundaries_by_name():
    small = backbone_blocks(CHEAP, build_backbone(CHEAP, (32, 32, 3)))
    assert [layer.name for layer in small[0] if layer.weights] == ["conv", "conv_bn"]
    assert [layer.name for layer in small[1] if layer.weights][0] == "expanded_conv_depthwise"
    last = [layer.name for layer in small[-1] if layer.weights]
    assert last[0] == "expanded_conv_10_expand" and last[-2:] == ["conv_1", "conv_1_bn"]


def test_grayscale_is_repeated_and_scaled_as_the_backbone_expects():
    model = _classifier()
    x = _x(2)
    scaled = keras.Model(model.input, model.get_layer("backbone_input").output)(x)
    # MobileNetV3's own Rescaling expects [0, 255].
    np.testing.assert_allclose(np.asarray(scaled), np.repeat(x, 3, axis=-1) * 255.0, rtol=1e-6)
    assert BACKBONES["resnet50v2"].input_scale == 2.0  # [0, 1] -> [-1, 1], preprocess "tf"
    assert BACKBONES["resnet50v2"].input_offset == -1.0
    assert float(np.abs(np.asarray(model(x))).sum()) == 0.0  # the head starts at zero


def test_weights_round_trip_through_a_weights_h5_file(tmp_path):
    keras.utils.set_random_seed(1)
    first = _classifier()
    path = str(tmp_path / "small.weights.h5")
    first.get_layer(CHEAP).save_weights(path)
    keras.utils.set_random_seed(2)
    loaded = backbone_classifier(CHEAP, SHAPE, 2, weights_path=path)
    keras.utils.set_random_seed(2)
    fresh = _classifier()
    for want, got in zip(first.get_layer(CHEAP).weights, loaded.get_layer(CHEAP).weights):
        np.testing.assert_array_equal(np.asarray(want), np.asarray(got))
    x = _x(3)
    # A random MobileNetV3's features are tiny (about 1e-10): compared relative to their size.
    want = _features(first, x)
    np.testing.assert_allclose(_features(loaded, x), want, rtol=1e-4, atol=0)
    assert np.abs(_features(fresh, x) - want).max() > 0.1 * np.abs(want).max()  # not the seed
    assert loaded.backbone_pretrained and not fresh.backbone_pretrained


def test_weights_load_from_a_keras_applications_style_h5_file(tmp_path):
    """keras.applications' files are Keras 2's .h5 format, loaded by layer order."""
    keras.utils.set_random_seed(3)
    source = build_backbone(CHEAP, (32, 32, 3))
    path = str(tmp_path / BACKBONES[CHEAP].weights_file)
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, source)
    keras.utils.set_random_seed(4)
    loaded = backbone_classifier(CHEAP, SHAPE, 2, weights_path=path)
    for want, got in zip(source.weights, loaded.get_layer(CHEAP).weights):
        np.testing.assert_array_equal(np.asarray(want), np.asarray(got))
    assert len(source.weights) == len(loaded.get_layer(CHEAP).weights) == 206


def test_missing_weights_say_where_to_get_them(tmp_path):
    missing = str(tmp_path / "nowhere.h5")
    with pytest.raises(ValueError) as error:
        backbone_classifier(CHEAP, SHAPE, 2, weights_path=missing)
    text = str(error.value)
    for part in ("weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
                 "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v3/"
                 "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
                 "--backbone_weights", "never downloads", "NOT pretrained", missing):
        assert part in text, part


def test_weights_of_another_backbone_or_no_weights_at_all_are_refused(tmp_path):
    other = str(tmp_path / "large.weights.h5")
    build_backbone("mobilenetv3large", (32, 32, 3)).save_weights(other)
    with pytest.raises(ValueError, match=r"could not be loaded into MobileNetV3Small.*"
                                         r"weights_mobilenet_v3_small"):
        backbone_classifier(CHEAP, SHAPE, 2, weights_path=other)
    junk = tmp_path / "junk.h5"
    junk.write_text("not weights")
    with pytest.raises(ValueError, match="could not be loaded"):
        backbone_classifier(CHEAP, SHAPE, 2, weights_path=str(junk))


def _trainable(model):
    return sorted(w.path for w in model.trainable_weights)


def test_head_mode_trains_only_the_head_and_caches_the_frozen_features():
    model = _classifier(fine_tune="head")
    assert _trainable(model) == ["head/bias", "head/kernel"]
    assert model.fine_tuning.trainable_parameters == 0
    split = split_frozen_prefix(model, sample=_x(8))
    assert split is not None  # the run computes the backbone's features once
    assert [layer.name for layer in split.head.layers][1:] == ["head"]
    model.get_layer("head").kernel.assign(
        np.random.default_rng(0).normal(size=(576, 2)).astype("float32"))
    x = _x(3)
    np.testing.assert_allclose(np.asarray(split.head(split.features_of(x))),
                               np.asarray(model(x)), rtol=1e-5, atol=1e-5)


def test_last_blocks_train_the_last_block_but_its_batch_norm():
    model = _classifier(fine_tune="last_blocks", fine_tune_blocks=1)
    backbone = model.get_layer(CHEAP)
    last = backbone_blocks(CHEAP, backbone)[-1]
    want = sum(int(np.prod(w.shape)) for layer in last if layer.weights
               and not isinstance(layer, keras.layers.BatchNormalization) for w in layer.weights)
    assert model.fine_tuning.trainable_parameters == want == 346896
    assert not any("bn" in w.path for w in model.trainable_weights)
    assert set(model.fine_tuning.trained_layers) == {
        "expanded_conv_10_expand", "expanded_conv_10_depthwise",
        "expanded_conv_10_squeeze_excite_conv", "expanded_conv_10_squeeze_excite_conv_1",
        "expanded_conv_10_project", "conv_1"}
    with pytest.raises(ValueError, match="at most 12"):
        _classifier(fine_tune="last_blocks", fine_tune_blocks=13)


def test_lora_trains_only_the_factors_of_the_convolutions():
    model = _classifier(fine_tune="lora", fine_tune_blocks=1, lora_rank=2)
    names = _trainable(model)
    assert all(n.startswith("head/") or n.endswith(("lora_kernel_a", "lora_kernel_b"))
               for n in names)
    backbone = model.get_layer(CHEAP)
    convs = [layer for layer in backbone_blocks(CHEAP, backbone)[-1]
             if type(layer) is keras.layers.Conv2D]
    # A: [k, k, c_in, r], B: [r, c_out] for each Conv2D (the depthwise one has no LoRA).
    want = sum(int(np.prod(c.kernel.shape[:3])) * 2 + 2 * c.filters for c in convs)
    assert model.fine_tuning.trainable_parameters == want
    assert len(convs) == 5 and len(names) == 2 * 5 + 2


@pytest.mark.parametrize("mode", ["head", "last_blocks", "lora"])
@pytest.mark.parametrize("name", ALL)
def test_every_trainable_layer_takes_an_exact_rule(name, mode):
    model = _classifier(name, fine_tune=mode, fine_tune_blocks=1, lora_rank=2)
    plan = tfdp.training.gradient_plan(model, _x(4))
    assert all(path.startswith("rule:") for path in plan.values()), plan
    trainable_layers = {"head"} | set(model.fine_tuning.trained_layers)
    assert set(plan) == trainable_layers
    assert len(plan) == (1 if mode == "head" else len(trainable_layers)) and len(plan) >= 1


def test_lora_model_trains_privately_and_moves_nothing_frozen():
    model = _classifier(fine_tune="lora", lora_rank=2)
    frozen = [np.asarray(w).copy() for w in model.non_trainable_weights]
    lora_before = [np.asarray(w).copy() for w in model.trainable_weights]
    private = tfdp.make_private(model)
    private.compile(optimizer=tfdp.DPKerasSGDOptimizer(l2_norm_clip=1.0, noise_multiplier=0.0,
                                                       learning_rate=0.5),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                                    reduction=None))
    private.fit(_x(6), np.arange(6) % 2, batch_size=6, epochs=1, verbose=0)
    for before, weight in zip(frozen, model.non_trainable_weights):
        np.testing.assert_array_equal(before, np.asarray(weight))  # BN statistics too
    moved = sum(float(np.abs(np.asarray(w) - b).sum())
                for b, w in zip(lora_before, model.trainable_weights))
    assert moved > 0.0


def test_registry_builds_backbones_by_name():
    assert {f"backbone:{name}" for name in BACKBONES} <= set(models.available_models())
    with pytest.warns(UserWarning, match="NOT pretrained"):
        model = models.build_model(f"backbone:{CHEAP}", SHAPE, 3, fine_tune="lora")
    assert model.output.shape[-1] == 3 and model.fine_tuning.mode == "lora"
    with pytest.raises(ValueError, match="Unknown backbone"):
        backbone_classifier("vgg16", SHAPE, 2)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        backbone_classifier(CHEAP, (32, 32, 2), 2)


def test_statement_says_random_or_which_file(tmp_path):
    random = backbone_statement(CHEAP, "lora", None, 2, 8)
    assert "RANDOM" in random and "NOT pretrained" in random and "rank 8" in random
    path = tmp_path / "w.h5"
    path.write_bytes(b"abc")
    text = backbone_statement(CHEAP, "head", str(path))
    # SHA-256 of b"abc" begins ba7816bf8f01cfea; the folder stays out of the record.
    assert "w.h5 (sha256 ba7816bf8f01cfea)" in text and str(tmp_path) not in text
    assert "NOT pretrained" not in text
