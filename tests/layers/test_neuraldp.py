"""Tests for tfdp.layers.ActivationPrivatizer (NeuralDP), its model builder and its privacy record."""

import math

import dp_accounting
import numpy as np
import pytest
import keras
import tensorflow as tf

import tfdp
from tfdp.models.neuraldp import PRIVATIZER_NAME, neuraldp_model
from tfdp.accounting import neuraldp_privacy
from tfdp.layers import ActivationPrivatizer


def _numpy_clip(a, clip):
    """Reference per-example clip over all non-batch axes, written independently of TF."""
    flat = a.reshape(a.shape[0], -1).astype(np.float64)
    norms = np.linalg.norm(flat, axis=1)
    scale = np.minimum(1.0, clip / np.maximum(norms, 1e-300))
    return (flat * scale[:, None]).reshape(a.shape)


def _varied_activations(shape=(64, 4, 4, 3), seed=0):
    """Examples whose norms span well below to well above a clip of 1."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=shape)
    target = np.exp(rng.uniform(np.log(0.05), np.log(50.0), size=shape[0]))
    norms = np.linalg.norm(a.reshape(shape[0], -1), axis=1)
    a *= (target / norms).reshape((-1,) + (1,) * (len(shape) - 1))
    a[0] = 0.0  # an all-zero example must pass through unchanged
    return a.astype(np.float32)


def test_clip_bound_holds_for_every_example_with_noise_zero():
    clip = 1.0
    a = _varied_activations()
    norms_in = np.linalg.norm(a.reshape(len(a), -1), axis=1)
    assert (norms_in > clip).sum() >= 10 and (norms_in < clip).sum() >= 10
    out = ActivationPrivatizer(clip, 0.0)(a, training=True).numpy()
    norms_out = np.linalg.norm(out.reshape(len(out), -1), axis=1)
    assert np.all(norms_out <= clip * (1 + 1e-6))
    # Exactly the reference clip: small examples unchanged, large ones scaled onto the sphere.
    np.testing.assert_allclose(out, _numpy_clip(a, clip), rtol=1e-5, atol=1e-6)
    big = norms_in > clip
    np.testing.assert_allclose(norms_out[big], clip, rtol=1e-5)
    np.testing.assert_array_equal(out[0], 0.0)


def test_training_noise_has_std_multiplier_times_clip_and_inference_is_identity():
    clip, sigma = 2.0, 1.5
    layer = ActivationPrivatizer(clip, sigma, seed=3)
    n_rows, n_cols = 200, 64
    x = np.zeros((n_rows, n_cols), np.float32)  # norm 0: clipping leaves it, noise only
    noise = layer(x, training=True).numpy()
    std, n = sigma * clip, n_rows * n_cols
    assert abs(noise.mean()) < 6 * std / math.sqrt(n)
    assert abs(noise.std() - std) < 6 * std / math.sqrt(2 * n)
    assert layer.noise_stddev == pytest.approx(3.0)
    a = _varied_activations((32, 10))
    np.testing.assert_array_equal(layer(a).numpy(), a)
    np.testing.assert_array_equal(layer(a, training=False).numpy(), a)


def test_clip_at_inference_clips_without_noise():
    a = _varied_activations((32, 2, 5))
    layer = ActivationPrivatizer(1.0, 5.0, clip_at_inference=True)
    first, second = layer(a).numpy(), layer(a).numpy()
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(first, _numpy_clip(a, 1.0), rtol=1e-5, atol=1e-6)


def test_config_round_trip_and_bad_arguments():
    layer = ActivationPrivatizer(0.5, 2.0, clip_at_inference=True, seed=4, name="priv")
    clone = ActivationPrivatizer.from_config(layer.get_config())
    assert (clone.clip_norm, clone.noise_multiplier, clone.clip_at_inference, clone.seed) == (
        0.5, 2.0, True, 4)
    with pytest.raises(ValueError, match="clip_norm"):
        ActivationPrivatizer(0.0, 1.0)
    with pytest.raises(ValueError, match="noise_multiplier"):
        ActivationPrivatizer(1.0, -1.0)


@pytest.mark.parametrize("input_shape,before", [((8, 8, 1), "flatten"), ((30,), "feature0")])
def test_builder_privatizes_the_features_before_the_head(input_shape, before):
    model = neuraldp_model(input_shape, 3, clip_norm=0.5, noise_multiplier=1.0)
    names = [l.name for l in model.layers]
    i = names.index(PRIVATIZER_NAME)
    assert names[i - 1] == before and names[i + 1] == "head" and names[-1] == "logits"
    # Exactly one privatized layer; it keeps the settings it was given.
    privatizers = [l for l in model.layers if isinstance(l, ActivationPrivatizer)]
    assert len(privatizers) == 1 and privatizers[0].clip_norm == 0.5
    x = np.random.default_rng(0).random((4,) + input_shape).astype(np.float32)
    np.testing.assert_array_equal(model.predict(x, verbose=0), model.predict(x, verbose=0))
    with pytest.raises(ValueError, match="images .* or vectors"):
        neuraldp_model((4, 4), 2)


def test_claimed_epsilon_matches_an_independent_rdp_computation_and_is_only_a_claim():
    n, batch, steps, sigma, delta = 1000, 64, 300, 1.1, 1e-5
    result = neuraldp_privacy(sigma, 1.0, num_examples=n, batch_size=batch, steps=steps,
                              delta=delta)
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(batch / n, dp_accounting.GaussianDpEvent(sigma)),
        steps)
    reference = dp_accounting.rdp.RdpAccountant().compose(event).get_epsilon(delta)
    assert result.epsilon_claimed == pytest.approx(reference, rel=1e-6)
    # The formal field never carries the claim.
    assert math.isinf(result.epsilon) and math.isinf(result.epsilon_noisy_steps_only)
    assert not result.is_guarantee
    assert "withdrawn" in result.epsilon_claimed_by and "not a guarantee" in result.epsilon_claimed_by
    text = " ".join(result.statement.split())
    for words in ("withdrawn by its authors", "does not cover", "the layers before the "
                  "privatized one", "the labels", "neither clipped nor noised",
                  "does not make the training differentially private",
                  "No formal guarantee for this training as run: epsilon = inf"):
        assert words in text, words
    assert f"{reference:.3f}" in text
    # No noise: the claim itself is infinite; no step: nothing released.
    assert math.isinf(neuraldp_privacy(0.0, 1.0, num_examples=n, batch_size=batch,
                                       steps=steps).epsilon_claimed)
    assert neuraldp_privacy(1.0, 1.0, num_examples=n, batch_size=batch,
                            steps=0).epsilon_claimed == 0.0


def test_training_mode_is_noisy_and_the_layers_before_get_unprotected_gradients():
    keras.utils.set_random_seed(0)
    model = neuraldp_model((30,), 2, clip_norm=1.0, noise_multiplier=0.5, feature_units=(8,),
                           head_units=4)
    x = np.random.default_rng(0).normal(size=(64, 30)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    # Training-mode forward passes differ (noise); the layer feeding the privatizer gets an
    # ordinary gradient (the unprotected part the privacy statement warns about).
    a, b = model(x, training=True).numpy(), model(x, training=True).numpy()
    assert np.abs(a - b).max() > 1e-4
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
    grads = tape.gradient(loss, model.get_layer("feature0").trainable_variables)
    assert all(g is not None and np.abs(g.numpy()).max() > 0 for g in grads)
    assert tfdp.layers.ActivationPrivatizer is ActivationPrivatizer
