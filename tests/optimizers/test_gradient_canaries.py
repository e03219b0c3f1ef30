"""Gradient canaries ride through the optimizer's own noise query (white-box audit)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdp

NUM_EXAMPLES = 256
BATCH = 64
STEPS = 40


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(NUM_EXAMPLES, 5)).astype("float32")
    y = rng.integers(0, 3, size=NUM_EXAMPLES)
    return x, y


def _train(optimizer, included=None, seed=0):
    keras.utils.set_random_seed(seed)
    x, y = _data()
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    model = tfdp.make_private(model)
    model.compile(optimizer=optimizer,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                                  reduction=None))
    if included is not None:
        optimizer.add_gradient_canaries(included, BATCH / NUM_EXAMPLES, seed=seed)
    batches = tfdp.data.poisson_batches(x, y, BATCH, insecure_reproducible_seed=seed)
    model.fit(batches, epochs=STEPS * BATCH // NUM_EXAMPLES, verbose=0, shuffle=False)
    return model


def _included(m=400, seed=1):
    return np.random.default_rng(seed).random(m) < 0.5


def _optimizer(**kwargs):
    clip = "l1_norm_clip" if kwargs.get("mechanism") == "laplace" else "l2_norm_clip"
    return tfdp.DPKerasSGDOptimizer(learning_rate=0.1, expected_batch_size=BATCH,
                                    **{clip: 1.0}, **kwargs)


def test_gaussian_noise_on_the_block_matches_the_mechanism():
    sigma = 2.0
    included = _included(m=1600)
    model = _train(_optimizer(noise_multiplier=sigma), included)
    scores = model.optimizer.gradient_canary_scores()
    q, steps = BATCH / NUM_EXAMPLES, model.optimizer.noisy_steps.numpy()
    assert model.optimizer._gradient_canaries.steps == steps
    # score = sum_t x_t / s_t^2 with s_t ~ sigma * clip: excluded canaries are pure noise of
    # spread sqrt(T) / sigma; included ones are shifted by T q / sigma^2.
    out, inn = scores[~included], scores[included]
    assert abs(np.mean(out)) < 4 * np.sqrt(steps) / sigma / np.sqrt(out.size)
    np.testing.assert_allclose(np.std(out), np.sqrt(steps) / sigma, rtol=0.15)
    # The noise is secret (unseeded): the shift's tolerance is 4.5 of its standard errors
    # (0.16 here, for a shift of 2.5; half or twice the shift is 8 or more away).
    standard_error = np.sqrt(np.var(inn) / inn.size + np.var(out) / out.size)
    assert abs(np.mean(inn) - np.mean(out) - steps * q / sigma ** 2) < 4.5 * standard_error


def test_released_noiseless_steps_expose_every_sampled_canary():
    # The random schedule with noise on a quarter of the steps, the rest released as is:
    # a canary that joined one released step has a score far above any excluded one.
    included = _included()
    model = _train(_optimizer(noise_multiplier=2.0, noise_schedule="random",
                              noise_probability=0.25, on_skip="release"), included)
    scores = model.optimizer.gradient_canary_scores()
    assert model.optimizer.noisy_steps.numpy() < STEPS  # some steps were released
    top = np.argsort(-scores)[: included.sum() // 2]
    assert included[top].all()
    assert np.max(scores[~included]) < np.median(scores[included])


def test_dropped_steps_show_nothing():
    # With on_skip="drop" the skipped steps release nothing, so only noisy steps count.
    included = _included()
    model = _train(_optimizer(noise_multiplier=2.0, noise_schedule="random",
                              noise_probability=0.25, on_skip="drop"), included)
    scores = model.optimizer.gradient_canary_scores()
    noisy = model.optimizer.noisy_steps.numpy()
    np.testing.assert_allclose(np.std(scores[~included]), np.sqrt(noisy) / 2.0, rtol=0.25)


def test_laplace_block_gets_laplace_noise():
    included = _included()
    b = 3.0
    model = _train(_optimizer(mechanism="laplace", noise_multiplier=b), included)
    scores = model.optimizer.gradient_canary_scores()
    # Laplace of scale b (spread sqrt(2) b); the MAD estimate of it is ln(2) b * 1.4826.
    s = np.log(2.0) * b * 1.482602218505602
    steps = model.optimizer.noisy_steps.numpy()
    np.testing.assert_allclose(np.std(scores[~included]), np.sqrt(steps) * np.sqrt(2) * b / s ** 2,
                               rtol=0.2)


def test_the_model_update_is_unchanged():
    # Without noise, the canaries must not move the model's weights at all.
    plain = _train(_optimizer(noise_multiplier=1e-9))
    audited = _train(_optimizer(noise_multiplier=1e-9), _included())
    for a, b in zip(plain.get_weights(), audited.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_bad_use_is_refused():
    optimizer = _optimizer(noise_multiplier=1.0)
    with pytest.raises(ValueError, match="add_gradient_canaries"):
        optimizer.gradient_canary_scores()
    with pytest.raises(ValueError, match="boolean"):
        optimizer.add_gradient_canaries(np.array([0, 1]), 0.1)
    with pytest.raises(ValueError, match="sampling rate"):
        optimizer.add_gradient_canaries(np.array([True, False]), 0.0)
    model = _train(optimizer)
    with pytest.raises(ValueError, match="before the first"):
        model.optimizer.add_gradient_canaries(np.array([True, False]), 0.1)
