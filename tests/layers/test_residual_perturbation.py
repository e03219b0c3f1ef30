"""Tests for tfdp.layers.ResidualPerturbation, its ResNet builder and its privacy record."""

import math

import numpy as np
import pytest
import keras
import tensorflow as tf

import tfdp
from tfdp.models.residual_perturbation import residual_perturbation_resnet
from tfdp.models.resnet import resnet
from tfdp.accounting import residual_perturbation_privacy
from tfdp.layers import ResidualPerturbation, noisy_ensemble_probabilities, set_inference_noise

# Sample-std tolerance: the std of n normal draws has standard error ~ sigma / sqrt(2 n);
# 6 standard errors keeps a false failure far below one in a million.
N_ROWS, N_COLS = 200, 50
N = N_ROWS * N_COLS


def _std_tolerance(sigma, n=N):
    return 6.0 * sigma / math.sqrt(2 * n)


def _mean_tolerance(sigma, n=N):
    return 6.0 * sigma / math.sqrt(n)


def test_additive_noise_in_training_has_std_gamma_and_is_fresh_per_example():
    gamma = 0.7
    layer = ResidualPerturbation(gamma, seed=1)
    x = tf.fill((N_ROWS, N_COLS), 3.0)
    noise = layer(x, training=True).numpy() - 3.0
    assert abs(noise.mean()) < _mean_tolerance(gamma)
    assert abs(noise.std() - gamma) < _std_tolerance(gamma)
    # Independent draws per example and per call: no two rows (or calls) share noise.
    assert not np.allclose(noise[0], noise[1])
    again = layer(x, training=True).numpy() - 3.0
    assert abs(np.corrcoef(noise.ravel(), again.ravel())[0, 1]) < 6.0 / math.sqrt(N)


def test_no_noise_at_inference_unless_asked():
    x = tf.random.normal((N_ROWS, N_COLS))
    layer = ResidualPerturbation(0.5)
    np.testing.assert_array_equal(layer(x).numpy(), x.numpy())
    np.testing.assert_array_equal(layer(x, training=False).numpy(), x.numpy())
    on = ResidualPerturbation(0.5, active_at_inference=True)
    noise = on(x, training=False).numpy() - x.numpy()
    assert abs(noise.std() - 0.5) < _std_tolerance(0.5)


def test_multiplicative_noise_is_proportional_to_the_activation():
    gamma, value = 0.3, -2.0
    layer = ResidualPerturbation(gamma, noise="multiplicative")
    x = tf.fill((N_ROWS, N_COLS), value)
    noise = layer(x, training=True).numpy() - value
    sigma = gamma * abs(value)
    assert abs(noise.std() - sigma) < _std_tolerance(sigma)
    # Zero activations get no noise at all.
    np.testing.assert_array_equal(layer(tf.zeros((3, 4)), training=True).numpy(), 0.0)


def test_config_round_trip_and_bad_arguments():
    layer = ResidualPerturbation(0.25, noise="multiplicative", active_at_inference=True, seed=7,
                                 name="rp")
    clone = ResidualPerturbation.from_config(layer.get_config())
    assert (clone.gamma, clone.noise, clone.active_at_inference, clone.seed, clone.name) == (
        0.25, "multiplicative", True, 7, "rp")
    with pytest.raises(ValueError, match="gamma"):
        ResidualPerturbation(-1.0)
    with pytest.raises(ValueError, match="noise.*additive"):
        ResidualPerturbation(0.5, noise="laplace")
    with pytest.raises(ValueError, match="active_at_inference"):
        ResidualPerturbation(0.5, active_at_inference="yes")


def test_builder_puts_the_noise_on_every_residual_branch_before_the_addition():
    model = residual_perturbation_resnet((8, 8, 1), 3, gamma=0.5, stage_filters=(4, 8),
                                         blocks_per_stage=2)
    adds = [l for l in model.layers if isinstance(l, keras.layers.Add)]
    noises = [l for l in model.layers if isinstance(l, ResidualPerturbation)]
    assert len(adds) == 4 and len(noises) == 4
    for add in adds:
        inbound = [t._keras_history.operation for t in add.input]  # pylint: disable=protected-access
        assert sum(isinstance(l, ResidualPerturbation) for l in inbound) == 1


def test_model_is_the_plain_resnet_at_inference_and_noisy_in_training():
    keras.utils.set_random_seed(0)
    noisy = residual_perturbation_resnet((8, 8, 1), 4, gamma=1.0, stage_filters=(4, 8))
    plain = resnet((8, 8, 1), 4, stage_filters=(4, 8))
    for layer in plain.layers:  # same names; the noise layers have no weights
        layer.set_weights(noisy.get_layer(layer.name).get_weights())
    x = np.random.default_rng(0).random((16, 8, 8, 1)).astype(np.float32)
    np.testing.assert_allclose(noisy.predict(x, verbose=0), plain.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)
    trained_mode = noisy(x, training=True).numpy()
    assert np.abs(trained_mode - plain(x, training=True).numpy()).max() > 1e-3
    # Switched on for inference (the ensemble use), predictions become random; off again, exact.
    assert set_inference_noise(noisy, True) == 2
    first, second = noisy.predict(x, verbose=0), noisy.predict(x, verbose=0)
    assert np.abs(first - second).max() > 1e-3
    set_inference_noise(noisy, False)
    np.testing.assert_allclose(noisy.predict(x, verbose=0), plain.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)


def test_noisy_ensemble_averages_probabilities_and_restores_the_switch():
    keras.utils.set_random_seed(0)
    model = residual_perturbation_resnet((8, 8, 1), 3, gamma=1.0, stage_filters=(4,))
    x = np.random.default_rng(1).random((10, 8, 8, 1)).astype(np.float32)
    probs = noisy_ensemble_probabilities(model, x, num_samples=4)
    assert probs.shape == (10, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    clean = tf.nn.softmax(model.predict(x, verbose=0)).numpy()
    assert np.abs(probs - clean).max() > 1e-4
    assert not any(l.active_at_inference for l in model.layers
                   if isinstance(l, ResidualPerturbation))
    with pytest.raises(ValueError, match="no ResidualPerturbation"):
        noisy_ensemble_probabilities(resnet((8, 8, 1), 3, stage_filters=(4,)), x)


def test_saved_and_loaded_model_keeps_the_layers():
    model = residual_perturbation_resnet((8, 8, 1), 2, gamma=0.3, stage_filters=(4,))
    path = "/tmp/tfdp_rp_test.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    layers = [l for l in loaded.layers if isinstance(l, ResidualPerturbation)]
    assert len(layers) == 1 and layers[0].gamma == pytest.approx(0.3)


def test_privacy_record_gives_no_epsilon_and_says_why():
    result = residual_perturbation_privacy(0.5, num_examples=1000, batch_size=50, steps=200,
                                           delta=1e-5)
    assert math.isinf(result.epsilon) and math.isinf(result.epsilon_noisy_steps_only)
    assert not result.is_guarantee and result.epsilon_claimed is None
    text = " ".join(result.statement.split())
    for words in ("No formal guarantee for this training as run", "epsilon = inf",
                  "neither clipped nor noised", "The paper's differential-privacy bound assumes",
                  "neither enforces nor checks", "gamma = 0.5", "arXiv 2408.05723"):
        assert words in text, words
    as_dict = result.to_dict()
    assert math.isinf(as_dict["epsilon"]) and as_dict["method"] == "residual_perturbation"
    with pytest.raises(ValueError, match="gamma"):
        residual_perturbation_privacy(-0.1, num_examples=10, batch_size=5, steps=1)
    with pytest.raises(ValueError, match="delta"):
        residual_perturbation_privacy(0.5, num_examples=10, batch_size=5, steps=1, delta=2.0)


def test_public_names():
    assert tfdp.layers.ResidualPerturbation is ResidualPerturbation
    assert callable(tfdp.accounting.residual_perturbation_privacy)
