"""Fine-tuning the digits prior: what trains in each mode, exact per-example gradients under
make_private, the registered names, and what the privacy statement says trained with DP."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdp
from tfdp.models import pretrained, registry

SMALL = dict(num_examples=600, epochs=1, extractors=2)  # a quick prior: the mechanics
FEATURES = 2 * 2 * 64 * 128 + 128    # one extractor's feature layer: Dense 256 -> 128
CONV3 = 3 * 3 * 32 * 64 + 64         # one extractor's third convolution
HEAD = 2 * 128 * 10 + 10             # the final layer on two extractors' features


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDP_CACHE_DIR", str(tmp_path))
    pretrained._weights.cache_clear()
    yield tmp_path
    pretrained._weights.cache_clear()


def _count(weights):
    return sum(int(np.prod(w.shape)) for w in weights)


def _model(**fine_tune):
    return pretrained.pretrained_linear((8, 8, 1), 10, **SMALL, **fine_tune)


@pytest.mark.parametrize("fine_tune, names, extractor_weights", [
    (dict(), [], 0),
    (dict(fine_tune="last_blocks"), ["features/bias", "features/kernel"], 2 * FEATURES),
    (dict(fine_tune="last_blocks", fine_tune_blocks=2),
     ["conv3/bias", "conv3/kernel", "features/bias", "features/kernel"], 2 * (FEATURES + CONV3)),
    # LoRA on the feature layer: A [256, 4] and B [4, 128]; its kernel and bias stay frozen.
    (dict(fine_tune="lora"), ["features/lora_kernel_a", "features/lora_kernel_b"],
     2 * (256 * 4 + 4 * 128)),
    (dict(fine_tune="lora", lora_rank=8), ["features/lora_kernel_a", "features/lora_kernel_b"],
     2 * (256 * 8 + 8 * 128)),
])
def test_each_mode_trains_the_head_and_the_chosen_part_of_every_extractor(
        cache, fine_tune, names, extractor_weights):
    model = _model(**fine_tune)
    expected = sorted(["logits/bias", "logits/kernel"]
                      + [f"public{seed}_{name}" for seed in (0, 1) for name in names])
    assert sorted(w.path for w in model.trainable_weights) == expected
    assert _count(model.trainable_weights) == HEAD + extractor_weights
    tuning = pretrained.prior_fine_tuning(model)
    assert tuning.mode == fine_tune.get("fine_tune", "head")
    assert tuning.trainable_parameters == extractor_weights
    assert pretrained.has_public_prior(model)  # fine-tuned or not, it holds the prior


def test_the_registered_names_build_the_shipped_prior_fine_tuned(cache):
    head = registry.build_model("prior_linear", (8, 8, 1), 10)
    last = registry.build_model("prior_last_blocks", (8, 8, 1), 10)
    lora = registry.build_model("prior_lora", (8, 8, 1), 10)
    assert _count(head.trainable_weights) == 512 * 10 + 10
    assert pretrained.prior_fine_tuning(last).trainable_parameters == 4 * FEATURES == 131584
    assert pretrained.prior_fine_tuning(lora).trainable_parameters == 4 * 1536 == 6144
    assert {"prior_last_blocks", "prior_lora"} <= set(registry.available_models())
    # The fine-tuned priors start where the head-only prior does (LoRA's B starts at zero).
    x = tfdp.data.load_dataset("digits", seed=0).x_test[:16]
    head.get_layer("logits").set_weights([np.full((512, 10), 0.01, "float32"),
                                          np.zeros(10, "float32")])
    for model in (last, lora):
        model.get_layer("logits").set_weights(head.get_layer("logits").get_weights())
        np.testing.assert_allclose(np.asarray(model(x)), np.asarray(head(x)), atol=1e-5)


def test_fine_tuning_needs_the_prior_and_says_what_to_use_instead():
    with pytest.raises(ValueError, match="8x8x1 images only.*'prior_linear'"):
        pretrained.prior_linear((30,), 2, fine_tune="lora")
    with pytest.raises(ValueError, match="8x8x1 images only"):
        registry.build_model("prior_last_blocks", (30,), 2)
    assert not pretrained.has_public_prior(pretrained.prior_linear((30,), 2))


def _loop_clipped_sum(model, x, y, clip):
    """Each example's gradient by its own tape, clipped to `clip`, summed: the reference."""
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    total, norms = None, []
    for i in range(len(x)):
        with tf.GradientTape() as tape:
            value = loss(y[i:i + 1], model(x[i:i + 1], training=True))
        grads = tape.gradient(value, model.trainable_weights)
        norm = float(tf.linalg.global_norm(grads))
        norms.append(norm)
        scaled = [np.asarray(g) * min(1.0, clip / norm) for g in grads]
        total = scaled if total is None else [t + s for t, s in zip(total, scaled)]
    return np.array(norms), total


@pytest.mark.parametrize("fine_tune", ["last_blocks", "lora"])
def test_a_dp_step_uses_exact_per_example_gradients_on_rules_only(cache, fine_tune):
    model = _model(fine_tune=fine_tune)
    rng = np.random.default_rng(0)
    # From a zero head no gradient reaches the extractors; start from a random one, and
    # (LoRA) a nonzero B, so that every trainable weight has a gradient.
    for weight in model.trainable_weights:
        weight.assign(rng.normal(scale=0.1, size=weight.shape).astype("float32"))
    data = tfdp.data.load_dataset("digits", seed=0)
    x, y = data.x_train[:8], data.y_train[:8]
    plan = tfdp.training.gradient_plan(model, x)
    assert plan == {"public0_features": plan["public0_features"],
                    "public1_features": plan["public1_features"], "logits": "rule:DenseRule"}
    assert all(path.startswith("rule:") for path in plan.values()), plan
    clip, rate = 0.5, 0.3
    norms, expected = _loop_clipped_sum(model, x, y, clip)
    assert norms.min() > clip  # every example is clipped: the clipping is exercised
    frozen = [np.asarray(w).copy() for w in model.non_trainable_weights]
    before = [np.asarray(w).copy() for w in model.trainable_weights]
    private = tfdp.make_private(model)
    private.compile(
        optimizer=tfdp.DPKerasSGDOptimizer(l2_norm_clip=clip, noise_multiplier=0.0,
                                           learning_rate=rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None))
    private.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    for old, new, grad in zip(before, private.trainable_weights, expected):
        np.testing.assert_allclose(old - np.asarray(new), rate * grad / len(x), atol=2e-6)
    for old, new in zip(frozen, private.non_trainable_weights):
        np.testing.assert_array_equal(old, np.asarray(new))  # kernels under LoRA included


def _words(text):
    return " ".join(text.split())


def test_the_statement_says_what_trained_with_dp(cache):
    from tfdp.accounting import no_privacy
    from tfdp.run.recipe import recipe_config, with_hyperparameter_paragraph

    head = _words(pretrained.prior_statement("", _model()))
    assert "are frozen; only the final layer is trained, with DP." in head
    assert head == _words(pretrained.prior_statement())
    last = _words(pretrained.prior_statement("", _model(fine_tune="last_blocks")))
    assert ("were then fine-tuned with DP on the private data: the last block of every "
            "extractor (its dense feature layer), 65,792 weights, and the final layer are "
            "trained with DP; the earlier blocks are frozen.") in last
    assert "only the final layer" not in last
    two = _words(pretrained.prior_statement(
        "", _model(fine_tune="last_blocks", fine_tune_blocks=2)))
    assert "the last 2 blocks of every extractor (its third convolution and dense feature " \
           "layer), 102,784 weights" in two
    lora = _words(pretrained.prior_statement("", _model(fine_tune="lora", lora_rank=8)))
    assert ("keep their pretrained weights, frozen; LoRA factors of rank 8 on the last block "
            "of every extractor (its dense feature layer), 6,144 weights, and the final layer "
            "are trained with DP") in lora
    # A run's statement carries the words of the model it trained.
    record = dataclasses.replace(no_privacy(1e-5), statement="Formal guarantee: none.\n")
    statement = _words(with_hyperparameter_paragraph(
        record, recipe_config(dataset="digits"), _model(fine_tune="lora")).statement)
    assert "LoRA factors of rank 4" in statement and "3,072 weights" in statement
