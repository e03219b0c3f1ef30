"""split_frozen_prefix: a frozen prefix computed once trains exactly like the whole model."""

import keras
import numpy as np
import pytest

from tfdp import run
from tfdp.run.training import train_model
from tfdp.training.frozen_features import split_frozen_prefix


def _frozen_then_head(extra_prefix=(), skip_from_input=False):
    """Input -> frozen conv (+ extra_prefix layers) -> flatten -> trainable dense."""
    x = keras.Input((6, 6, 1))
    h = keras.layers.Conv2D(4, 3, activation="relu", trainable=False, name="frozen_conv")(x)
    for layer in extra_prefix:
        h = layer(h)
    h = keras.layers.Flatten()(h)
    out = keras.layers.Dense(3, name="head")(h)
    if skip_from_input:
        out = keras.layers.Concatenate()([out, keras.layers.Flatten()(x)])
    return keras.Model(x, out)


def _images(n=16, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 6, 6, 1)).astype(np.float32)


def test_head_of_features_is_the_model_and_shares_its_weights():
    model = _frozen_then_head()
    x = _images()
    split = split_frozen_prefix(model, sample=x)
    assert split is not None
    assert [w.path for w in split.head.trainable_weights] == [
        w.path for w in model.trainable_weights]
    features = split.features_of(x)
    assert features.shape == (16, 16 * 4)
    np.testing.assert_allclose(split.head(features), model(x), atol=1e-6)
    # Changing the head's weights changes the model: one set of variables.
    kernel = split.head.get_layer("head").kernel
    kernel.assign(kernel + 1.0)
    np.testing.assert_allclose(split.head(features), model(x), atol=1e-5)
    # Chunked feature computation gives the same features as one call.
    many = _images(2500, seed=1)
    np.testing.assert_allclose(split.features_of(many), split.features(many), atol=1e-6)


@pytest.mark.parametrize("model_fn, why", [
    (lambda: keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Flatten(),
                               keras.layers.Dense(3)]), "nothing frozen before the head"),
    (lambda: _frozen_then_head((keras.layers.Dropout(0.5),)), "dropout in the prefix"),
    (lambda: _frozen_then_head((keras.layers.GaussianNoise(0.3),)), "noise in the prefix"),
    (lambda: _frozen_then_head(skip_from_input=True), "the output reads the raw input"),
])
def test_no_split_when_caching_would_change_the_training(model_fn, why):
    assert split_frozen_prefix(model_fn(), sample=_images()) is None, why


def test_trainable_layer_before_a_frozen_one_is_not_cut_after_it():
    x = keras.Input((6, 6, 1))
    h = keras.layers.Conv2D(4, 3, name="trainable_conv")(x)
    h = keras.layers.Conv2D(4, 3, trainable=False, name="frozen_conv")(h)
    model = keras.Model(x, keras.layers.Dense(2)(keras.layers.Flatten()(h)))
    # The first trainable layer reads the input itself: no frozen weights before it.
    assert split_frozen_prefix(model, sample=_images()) is None


_PRIOR = dict(dataset="digits", model="prior_linear", epochs=2, batch_size=64,
              max_train_examples=300, max_test_examples=60, learning_rate=0.5,
              noise_multiplier=1.0, sampling="poisson")


@pytest.mark.parametrize("mechanism", ["gaussian", "none"])
def test_training_on_cached_features_matches_training_the_whole_model(mechanism):
    # Reproducible noise and batches (the labelled insecure opt-in) for a same-run comparison.
    config = run.RunConfig(mechanism=mechanism, insecure_reproducible_seed=0, **{
        **_PRIOR, "noise_multiplier": 1.0 if mechanism != "none" else None}).validated()
    data = run.load_data(config)
    lines = []
    cached = train_model(config, data, log=lines.append)
    assert any("features computed once" in line for line in lines)
    logits_cached = cached.model.predict(data.x_test, verbose=0)
    steps_cached = int(cached.optimizer.iterations.numpy())
    whole = train_model(config, data, log=lines.append, cache_frozen_features=False)
    # Same seeds, same batches, same noise: the same trained head (up to float rounding).
    assert int(whole.optimizer.iterations.numpy()) == steps_cached > 0
    np.testing.assert_allclose(logits_cached, whole.model.predict(data.x_test, verbose=0),
                               atol=1e-4)
    # And training did move the head away from its zero start.
    assert np.abs(logits_cached).max() > 0.1
