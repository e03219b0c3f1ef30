"""set_fine_tuning: which weights of a pretrained part train in each mode, and that the
result trains under make_private with every trainable layer on an exact rule."""

import keras
import numpy as np
import pytest

import tfdp
from tfdp.training import set_fine_tuning

L = keras.layers


def _pretrained():
    """Two conv blocks (conv, BatchNormalization) and a dense block: a small backbone."""
    keras.utils.set_random_seed(0)
    x = keras.Input((8, 8, 3))
    h = L.Conv2D(4, 3, padding="same", name="b1_conv")(x)
    h = L.BatchNormalization(name="b1_bn")(h)
    h = L.Conv2D(4, 3, padding="same", name="b2_conv")(h)
    h = L.BatchNormalization(name="b2_bn")(h)
    h = L.GlobalAveragePooling2D(name="b2_pool")(h)
    h = L.Dense(5, name="b3_dense")(h)
    base = keras.Model(x, h, name="base")
    blocks = [[base.get_layer(n) for n in names] for names in
              (("b1_conv", "b1_bn"), ("b2_conv", "b2_bn", "b2_pool"), ("b3_dense",))]
    return base, blocks


def _classifier(base):
    x = keras.Input((8, 8, 3))
    return keras.Model(x, L.Dense(3, name="head")(base(x)))


def _trainable_names(model):
    return sorted(w.path for w in model.trainable_weights)


def test_head_freezes_the_whole_pretrained_part():
    base, blocks = _pretrained()
    result = set_fine_tuning(base, "head", blocks)
    assert result.trained_layers == () and result.trainable_parameters == 0
    assert _trainable_names(_classifier(base)) == ["head/bias", "head/kernel"]


def test_last_blocks_train_everything_in_them_but_batch_norm():
    base, blocks = _pretrained()
    result = set_fine_tuning(base, "last_blocks", blocks, num_blocks=2)
    assert result.trained_layers == ("b2_conv", "b3_dense")
    assert result.trainable_parameters == 4 * 4 * 9 + 4 + 4 * 5 + 5
    assert not base.get_layer("b2_bn").trainable  # inference mode: no batch statistics
    assert not base.get_layer("b1_conv").trainable


def test_lora_trains_only_the_low_rank_factors():
    base, blocks = _pretrained()
    result = set_fine_tuning(base, "lora", blocks, num_blocks=2, lora_rank=2)
    assert result.trained_layers == ("b2_conv", "b3_dense")
    names = _trainable_names(base)
    assert names == ["b2_conv/lora_kernel_a", "b2_conv/lora_kernel_b",
                     "b3_dense/lora_kernel_a", "b3_dense/lora_kernel_b"]
    # A [3, 3, 4, r] and B [r, 4] for the conv; A [4, r] and B [r, 5] for the dense layer.
    assert result.trainable_parameters == 36 * 2 + 2 * 4 + 4 * 2 + 2 * 5


def test_modes_can_be_changed_and_bad_settings_say_what_to_do():
    base, blocks = _pretrained()
    set_fine_tuning(base, "last_blocks", blocks, num_blocks=3)
    assert set_fine_tuning(base, "head", blocks).trainable_parameters == 0
    with pytest.raises(ValueError, match="at most 3"):
        set_fine_tuning(base, "last_blocks", blocks, num_blocks=4)
    with pytest.raises(ValueError, match="fine_tune"):
        set_fine_tuning(base, "all", blocks)
    with pytest.raises(ValueError, match="last_blocks"):
        set_fine_tuning(base, "lora", [[base.get_layer("b2_pool")]])


@pytest.mark.parametrize("mode", ["last_blocks", "lora"])
def test_fine_tuned_model_trains_privately_with_every_layer_on_a_rule(mode):
    base, blocks = _pretrained()
    set_fine_tuning(base, mode, blocks, num_blocks=2, lora_rank=2)
    model = _classifier(base)
    x = np.random.default_rng(0).normal(size=(6, 8, 8, 3)).astype("float32")
    plan = tfdp.training.gradient_plan(model, x)
    assert all(path.startswith("rule:") for path in plan.values()), plan
    assert set(plan) == {"b2_conv", "b3_dense", "head"}
    private = tfdp.make_private(model)
    private.compile(optimizer=tfdp.DPKerasSGDOptimizer(l2_norm_clip=1.0, noise_multiplier=0.0,
                                                       learning_rate=0.1),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                                    reduction=None))
    frozen = [w.numpy().copy() for w in base.non_trainable_weights]
    private.fit(x, np.arange(6) % 3, batch_size=6, epochs=1, verbose=0)
    # Nothing frozen moved: the kernels under LoRA, the BatchNormalization statistics.
    for before, weight in zip(frozen, base.non_trainable_weights):
        np.testing.assert_array_equal(before, weight.numpy())


def test_a_list_of_layers_is_fine_tuned_like_the_model_that_holds_them():
    # Parallel extractors inside one functional model are not a model of their own.
    base, blocks = _pretrained()
    layers = [layer for block in blocks for layer in block]
    result = set_fine_tuning(layers, "lora", blocks, num_blocks=2, lora_rank=2)
    assert result.trained_layers == ("b2_conv", "b3_dense")
    assert result.trainable_parameters == 36 * 2 + 2 * 4 + 4 * 2 + 2 * 5
    assert _trainable_names(base) == ["b2_conv/lora_kernel_a", "b2_conv/lora_kernel_b",
                                      "b3_dense/lora_kernel_a", "b3_dense/lora_kernel_b"]
    base, blocks = _pretrained()
    result = set_fine_tuning([layer for block in blocks for layer in block], "last_blocks",
                             blocks, num_blocks=1)
    assert result.trainable_parameters == 4 * 5 + 5 and _trainable_names(base) == [
        "b3_dense/bias", "b3_dense/kernel"]


class _Tokens(L.Layer):
    """A block nested in a layer of its own (as keras-hub's ViT nests its transformer
    blocks): an Embedding and a Dense inside."""

    def build(self, input_shape):
        self.table = L.Embedding(6, 3, name="table")
        self.table.build(input_shape)
        self.proj = L.Dense(2, name="proj")
        self.proj.build((None, input_shape[-1], 3))

    def call(self, ids):
        return self.proj(self.table(ids))


def test_nested_blocks_and_embeddings_train_through_lora_and_are_counted_once():
    keras.utils.set_random_seed(0)
    ids = keras.Input((4,), dtype="int32")
    tokens = _Tokens(name="tokens")
    base = keras.Model(ids, tokens(ids), name="base")
    # The block lists the parent layer and its children (the parent freezes and unfreezes
    # weights of its own); every variable counts once.
    result = set_fine_tuning(base, "last_blocks", [[tokens, tokens.table, tokens.proj]])
    assert result.trainable_parameters == 6 * 3 + 3 * 2 + 2
    result = set_fine_tuning(base, "lora", [[tokens.table, tokens.proj]], lora_rank=1)
    assert result.trained_layers == ("table", "proj")
    assert _trainable_names(base) == [
        "tokens/proj/lora_kernel_a", "tokens/proj/lora_kernel_b",
        "tokens/table/lora_embeddings_a", "tokens/table/lora_embeddings_b"]
    assert result.trainable_parameters == (6 + 3) + (3 + 2)
