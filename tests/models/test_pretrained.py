"""pretrained_linear: a frozen public prior under a DP head, and its cached pretraining."""

import numpy as np
import pytest
import keras

import tfdp
from tfdp.models import pretrained

SMALL = dict(num_examples=600, epochs=1, extractors=1)  # a quick prior: the mechanics, not the accuracy


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDP_CACHE_DIR", str(tmp_path))
    pretrained._weights.cache_clear()
    yield tmp_path
    pretrained._weights.cache_clear()


def test_only_the_head_trains_and_it_starts_from_zero(cache):
    model = pretrained.pretrained_linear((8, 8, 1), 10, **SMALL)
    trainable = model.trainable_weights
    assert [w.shape for w in trainable] == [(128, 10), (10,)]
    assert all(not np.any(np.asarray(w)) for w in trainable)
    assert len(model.non_trainable_weights) == 8  # three convolutions and the feature layer
    pair = pretrained.pretrained_linear((8, 8, 1), 3, **{**SMALL, "extractors": 2})
    assert [w.shape for w in pair.trainable_weights] == [(256, 3), (3,)]
    assert len(pair.non_trainable_weights) == 16
    # The second extractor is its own pretraining (seed 1), not a copy of the first.
    assert not np.allclose(np.asarray(pair.get_layer("public0_conv1").kernel),
                           np.asarray(pair.get_layer("public1_conv1").kernel))


def test_other_inputs_are_refused_with_advice(cache):
    with pytest.raises(ValueError, match="normalized_linear"):
        pretrained.pretrained_linear((30,), 2, **SMALL)
    with pytest.raises(ValueError, match="Unknown pretraining"):
        pretrained.public_digits_weights(num_exampels=10)


def test_pretraining_is_cached_on_disk_and_repeatable(cache, monkeypatch):
    first = pretrained.public_digits_weights(**SMALL)
    assert len(list(cache.glob("public_digits_*.npz"))) == 1
    pretrained._weights.cache_clear()

    def refuse(settings, seed):
        raise AssertionError("pretrained again instead of reading the cache")

    monkeypatch.setattr(pretrained, "_pretrain", refuse)
    again = pretrained.public_digits_weights(**SMALL)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    monkeypatch.undo()
    monkeypatch.setenv("TFDP_CACHE_DIR", str(cache / "fresh"))
    pretrained._weights.cache_clear()
    fresh = pretrained.public_digits_weights(**SMALL)  # pretrained again: the same weights
    for a, b in zip(first, fresh):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_the_extractor_learned_the_digits(cache):
    # Features fit to the synthetic digits separate real ones better than chance by far.
    model = pretrained.pretrained_linear((8, 8, 1), 10, num_examples=3000, epochs=3,
                                         extractors=1)
    features = keras.Model(model.input, model.get_layer("public0_features").output)
    data = tfdp.data.load_dataset("digits", seed=0)
    f = np.asarray(features(data.x_train[:600]))
    y = data.y_train[:600]
    means = np.stack([f[y == d].mean(axis=0) for d in range(10)])
    f_test = np.asarray(features(data.x_test))
    accuracy = (np.linalg.norm(f_test[:, None] - means, axis=2).argmin(1) == data.y_test).mean()
    assert accuracy > 0.8


def test_dp_training_moves_the_head_only_and_the_statement_names_the_prior(cache):
    model = pretrained.pretrained_linear((8, 8, 1), 10, **SMALL)
    frozen = [np.asarray(w).copy() for w in model.non_trainable_weights]
    private = tfdp.make_private(model)
    private.compile(
        optimizer=tfdp.optimizers.DPKerasSGDOptimizer(
            l2_norm_clip=1.0, noise_multiplier=1.0, learning_rate=0.5),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None))
    data = tfdp.data.load_dataset("digits", seed=0)
    private.fit(data.x_train[:64], data.y_train[:64], batch_size=32, epochs=1, verbose=0)
    for before, after in zip(frozen, private.non_trainable_weights):
        np.testing.assert_array_equal(before, np.asarray(after))
    assert np.any(np.asarray(private.trainable_weights[0]))
    text = pretrained.prior_statement()
    assert "40000 synthetic digits" in text and "costs no privacy" in text


def test_the_shipped_prior_is_read_not_pretrained(monkeypatch):
    # The default settings load models/public_digits_prior.npz: nothing pretrains at run time.
    pretrained._weights.cache_clear()

    def refuse(settings, seed):
        raise AssertionError("pretrained at run time instead of reading the shipped weights")

    monkeypatch.setattr(pretrained, "_pretrain", refuse)
    model = pretrained.pretrained_linear()
    units = pretrained.PRETRAIN["extractors"] * pretrained.PRETRAIN["feature_units"]
    assert [w.shape for w in model.trainable_weights] == [(units, 10), (10,)] == [(512, 10), (10,)]
    pretrained._weights.cache_clear()


def test_prior_linear_uses_the_prior_for_digits_only_and_the_statement_follows():
    import dataclasses

    from tfdp.accounting import no_privacy
    from tfdp.run.recipe import recipe_config, with_hyperparameter_paragraph

    digits = pretrained.prior_linear((8, 8, 1), 10)
    tabular = pretrained.prior_linear((30,), 2)
    assert pretrained.has_public_prior(digits) and not pretrained.has_public_prior(tabular)
    assert [w.shape for w in tabular.trainable_weights] == [(30, 2), (2,)]  # normalized_linear
    config = recipe_config(dataset="digits")
    record = dataclasses.replace(no_privacy(1e-5), statement="Formal guarantee: none.\n")
    def words(text):
        return " ".join(text.split())  # statements wrap their lines

    with_prior = words(with_hyperparameter_paragraph(record, config, digits).statement)
    without = words(with_hyperparameter_paragraph(record, config, tabular).statement)
    assert "Public prior:" in with_prior and "Public prior:" not in without
    assert "developed while measuring accuracy on these digits" in with_prior
    elsewhere = words(with_hyperparameter_paragraph(
        record, recipe_config(dataset="npz_digits_copy"), digits).statement)
    assert "Public prior:" in elsewhere and "developed while" not in elsewhere
    assert with_prior.endswith("Formal guarantee: none.")
