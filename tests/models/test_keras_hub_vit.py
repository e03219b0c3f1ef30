"""keras-hub's ViT backbone (the optional `hub` extra) under tfdp: every trainable layer on an
exact per-example rule in head, last-block and LoRA fine-tuning, and the whole network exact.

The backbone is built from constructor arguments with random weights: nothing is downloaded
(keras-hub's presets would fetch weights, so `from_preset` is never called here).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfdp.training import clipped_gradient_sum, gradient_plan, set_fine_tuning

keras_hub = pytest.importorskip("keras_hub")  # `uv sync --extra hub`; `make install` has it


def _weighted_leaves(layer):
    """The layer's innermost layers with weights, then the layer itself if it owns some
    (the patch embedding's class token)."""
    leaves = [sub for sub in layer._flatten_layers(include_self=False)  # pylint: disable=protected-access
              if not list(sub._flatten_layers(include_self=False)) and sub.weights]
    own = layer._trainable_variables + layer._non_trainable_variables  # pylint: disable=protected-access
    return leaves + ([layer] if own else [])


def _vit_classifier(mode, num_blocks=1):
    """A 2-layer ViT (32x32 images, 8x8 patches, width 32) fine-tuned in `mode`, the
    class token's features into a zero Dense head."""
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(32, 32, 3), patch_size=8, num_layers=2, num_heads=2, hidden_dim=32,
        mlp_dim=64, name="vit")
    encoder = backbone.get_layer("vit_encoder")
    blocks = [_weighted_leaves(backbone.get_layer("vit_patching_and_embedding"))]
    blocks += [_weighted_leaves(block) for block in encoder.encoder_layers]
    blocks[-1].append(encoder.layer_norm)
    tuning = set_fine_tuning(backbone, mode, blocks, num_blocks=num_blocks, lora_rank=4)
    images = keras.Input((32, 32, 3))
    tokens = backbone(images)
    logits = keras.layers.Dense(10, kernel_initializer="zeros", name="head")(tokens[:, 0])
    return keras.Model(images, logits), tuning


_X = np.random.default_rng(0).uniform(size=(4, 32, 32, 3)).astype("float32")
_Y = np.array([0, 3, 7, 3])
_BLOCK = ["ln_1", "query", "key", "value", "attention_output", "ln_2", "dense_1", "dense_2"]


def test_head_trains_only_the_dense_head():
    model, tuning = _vit_classifier("head")
    assert tuning.trainable_parameters == 0
    assert gradient_plan(model, _X) == {"head": "rule:DenseRule"}


def test_the_last_transformer_layer_trains_on_rules():
    model, tuning = _vit_classifier("last_blocks")
    rules = {"ln_1": "LayerNormalization", "ln_2": "LayerNormalization", "dense_1": "Dense",
             "dense_2": "Dense", "ln": "LayerNormalization", "head": "Dense"}
    assert gradient_plan(model, _X) == {
        name: f"rule:{rules.get(name, 'EinsumDense')}Rule" for name in _BLOCK + ["ln", "head"]}
    # 4 attention projections (32x32 + 32), 2 MLP Dense, 3 LayerNormalization (2 x 32 each).
    assert tuning.trainable_parameters == 4 * (32 * 32 + 32) + (32 * 64 + 64) + (64 * 32 + 32) \
        + 3 * 64


def test_lora_on_the_last_transformer_layer_trains_on_rules():
    model, tuning = _vit_classifier("lora")
    lora = {"dense_1": "DenseLora", "dense_2": "DenseLora"}
    assert gradient_plan(model, _X) == {
        **{name: f"rule:{lora.get(name, 'EinsumDenseLora')}Rule"
           for name in _BLOCK if not name.startswith("ln")}, "head": "rule:DenseRule"}
    # Rank 4: query/key/value A [32, 2, 4] B [4, 16]; output A [2, 16, 4] B [4, 32];
    # dense_1 A [32, 4] B [4, 64]; dense_2 A [64, 4] B [4, 32].
    assert tuning.trainable_parameters == 3 * (256 + 64) + (128 + 128) + (128 + 256) \
        + (256 + 128)


def test_the_whole_vit_is_exact_with_the_class_token_on_the_local_fallback():
    # Every block trains: the patch embedding's class token is a weight of the embedding layer
    # itself (local VJP), and its position embedding, looked up on fixed ids shared by the
    # batch, is re-run per example inside that layer.
    model, _ = _vit_classifier("last_blocks", num_blocks=3)
    model.get_layer("head").kernel.assign(
        np.random.default_rng(1).normal(size=(32, 10)).astype("float32"))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
    fast = clipped_gradient_sum(model, loss, _X, _Y, clip=1.0)
    assert fast.plan["vit_patching_and_embedding"] == "local"
    assert fast.plan["patch_embedding"] == "rule:ConvRule"
    assert "position_embedding" not in fast.plan
    # (The plan is keyed by layer name: both transformer layers' ln_1, query... share one.)
    assert [name for name, path in fast.plan.items() if not path.startswith("rule:")] == [
        "vit_patching_and_embedding"]
    norms, clipped = [], [np.zeros(v.shape) for v in model.trainable_variables]
    for i in range(len(_Y)):
        with tf.GradientTape() as tape:
            value = tf.reduce_sum(loss(_Y[i:i + 1], model(_X[i:i + 1], training=True)))
        grads = [tf.convert_to_tensor(g).numpy()
                 for g in tape.gradient(value, model.trainable_variables)]
        norms.append(np.sqrt(sum(np.sum(g ** 2) for g in grads)))
        clipped = [c + g * min(1.0, 1.0 / norms[-1]) for c, g in zip(clipped, grads)]
    np.testing.assert_allclose(fast.norms, norms, rtol=1e-4)
    assert min(norms) > 1.0  # every example clipped: the sums test the scaling too
    for got, want in zip(fast.clipped_sum, clipped):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-6)
