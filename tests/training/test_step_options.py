"""make_private's step options: augmentation multiplicity, physical batches, and EMA weights.

Augmentation multiplicity must clip the mean gradient of an example's K copies (one
example's contribution stays within the clip); physical batches must give the same
clipped sum as one big batch with one noise draw and one ledger step; the optimizer's
EMA weights must be the documented average of the trained weights.
"""

import numpy as np
import pytest
import keras
import tensorflow as tf

import tfdp

L = keras.layers
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
K = 4


def _model(inputs=3, classes=3, seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((inputs,)), L.Dense(5, activation="tanh"),
                             L.Dense(classes)])


def _copy_scale(x):
    """A deterministic "augmentation": copy k of every example is scaled by k + 1."""
    factors = tf.tile(tf.range(1.0, K + 1.0), [tf.shape(x)[0] // K])
    return x * factors[:, None]


def _flat(arrays):
    return np.concatenate([np.ravel(a) for a in arrays])


def _sgd(clip, noise=0.0, **kwargs):
    return tfdp.DPKerasSGDOptimizer(l2_norm_clip=clip, noise_multiplier=noise, learning_rate=1.0,
                                    **kwargs)


def test_multiplicity_clips_the_mean_of_the_copies_once():
    x = np.array([[3.0, -2.0, 1.5]], np.float32) * 4
    y = np.array([2])
    clip = 0.2
    base = _model()
    start = [w.numpy() for w in base.trainable_weights]
    # Reference: the mean of the K copies' gradients, then clipped once.
    grads = []
    for k in range(K):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(LOSS(y, base(x * (k + 1), training=True)))
        grads.append(_flat(tape.gradient(loss, base.trainable_weights)))
    mean = np.mean(grads, axis=0)
    assert np.linalg.norm(mean) > 4 * clip  # the clip binds
    want = -mean * min(1.0, clip / np.linalg.norm(mean))
    per_copy = -np.mean([g * min(1.0, clip / np.linalg.norm(g)) for g in grads], axis=0)
    assert np.linalg.norm(want - per_copy) > 1e-2 * clip  # the two orders are told apart

    model = tfdp.make_private(base, augment=_copy_scale, augmentation_multiplicity=K)
    model.compile(optimizer=_sgd(clip), loss=LOSS)
    model.fit(x, y, batch_size=1, epochs=1, verbose=0, shuffle=False)
    update = _flat([w.numpy() for w in model.trainable_weights]) - _flat(start)
    np.testing.assert_allclose(update, want, rtol=1e-4, atol=1e-6)
    assert np.linalg.norm(update) <= clip * (1 + 1e-5)
    assert int(model.optimizer.noisy_steps.numpy()) == 1


def test_multiplicity_with_random_keras_augmentation_stays_within_the_clip():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 6, 6, 1)).astype(np.float32) * 10
    base = keras.Sequential([keras.Input((6, 6, 1)), L.Conv2D(2, 3), L.Flatten(), L.Dense(3)])
    augment = keras.Sequential([L.RandomTranslation(0.2, 0.2, seed=1), L.GaussianNoise(0.5)])
    model = tfdp.make_private(base, augment=augment, augmentation_multiplicity=8)
    model.compile(optimizer=_sgd(0.1), loss=LOSS)
    for _ in range(3):
        start = _flat([w.numpy() for w in model.trainable_weights])
        model.fit(x, np.array([1]), batch_size=1, epochs=1, verbose=0)
        step = _flat([w.numpy() for w in model.trainable_weights]) - start
        assert 0 < np.linalg.norm(step) <= 0.1 * (1 + 1e-5)


def test_multiplicity_needs_an_augmentation_and_no_trainable_one():
    with pytest.raises(ValueError, match="needs an `augment`"):
        tfdp.make_private(_model(), augmentation_multiplicity=2)
    with pytest.raises(ValueError, match="trainable weights"):
        dense = L.Dense(3)
        dense.build((None, 3))
        tfdp.make_private(_model(), augment=dense, augmentation_multiplicity=2)


@pytest.mark.parametrize("physical", [1, 3, 7])
def test_physical_batches_give_the_same_step_as_one_batch(physical):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(10, 3)).astype(np.float32) * 3
    y = rng.integers(0, 3, size=10)
    results = []
    for size in (None, physical):
        model = tfdp.make_private(_model(), physical_batch_size=size)
        model.compile(optimizer=_sgd(0.3), loss=LOSS, metrics=["accuracy"])
        history = model.fit(x, y, batch_size=10, epochs=1, verbose=0, shuffle=False)
        results.append((_flat([w.numpy() for w in model.trainable_weights]),
                        history.history["loss"][0], history.history["accuracy"][0],
                        int(model.optimizer.iterations.numpy()),
                        int(model.optimizer.noisy_steps.numpy()),
                        int(model.optimizer.largest_batch_size.numpy())))
    (w0, loss0, acc0, *ledger0), (w1, loss1, acc1, *ledger1) = results
    np.testing.assert_allclose(w1, w0, rtol=1e-5, atol=1e-6)
    assert loss1 == pytest.approx(loss0, rel=1e-5) and acc1 == pytest.approx(acc0)
    assert ledger1 == ledger0 == [1, 1, 10]


def test_physical_batches_draw_the_noise_once():
    # Noise only (zero inputs: every gradient is tiny): the update's spread is sigma * clip / B
    # for one draw; one draw per chunk of 4 would give twice that.
    batch, sigma, clip = 16, 2.0, 1.0
    keras.utils.set_random_seed(3)
    base = keras.Sequential([keras.Input((40,)), L.Dense(50, use_bias=False)])
    model = tfdp.make_private(base, physical_batch_size=4)
    model.compile(optimizer=_sgd(clip, sigma, insecure_reproducible_seed=5), loss=keras.losses.MeanSquaredError(
        reduction=None))
    start = base.trainable_weights[0].numpy()
    model.fit(np.zeros((batch, 40), np.float32), np.zeros((batch, 50), np.float32),
              batch_size=batch, epochs=1, verbose=0)
    update = base.trainable_weights[0].numpy() - start
    assert np.std(update) == pytest.approx(sigma * clip / batch, rel=0.06)
    assert int(model.optimizer.noisy_steps.numpy()) == 1


def test_physical_batches_with_poisson_batches_and_augmentation():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    y = rng.integers(0, 3, size=40)
    model = tfdp.make_private(_model(), physical_batch_size=4, augment=_copy_scale,
                              augmentation_multiplicity=K)
    model.compile(optimizer=_sgd(1.0, 1.0, expected_batch_size=10), loss=LOSS)
    model.fit(tfdp.data.poisson_batches(x, y, 10, num_steps=6, insecure_reproducible_seed=0), epochs=1, verbose=0,
              shuffle=False)
    assert int(model.optimizer.noisy_steps.numpy()) == 6
    assert int(model.optimizer.iterations.numpy()) == 6


def test_physical_batches_refuse_the_jacobian_path():
    model = tfdp.make_private(_model(), physical_batch_size=2)
    model.compile(optimizer=_sgd(1.0, num_microbatches=2), loss=LOSS)
    with pytest.raises(ValueError, match="physical_batch_size needs"):
        model.fit(np.zeros((4, 3), np.float32), np.zeros(4), batch_size=4, verbose=0)


def test_step_options_survive_saving(tmp_path):
    augment = keras.Sequential([L.GaussianNoise(0.1)])
    model = tfdp.make_private(_model(), augment=augment, augmentation_multiplicity=2,
                              physical_batch_size=5)
    model.compile(optimizer=_sgd(1.0, 1.0), loss=LOSS)
    model.fit(np.ones((4, 3), np.float32), np.zeros(4), batch_size=4, verbose=0)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.augmentation_multiplicity == 2 and loaded.physical_batch_size == 5
    assert isinstance(loaded.step_options.augment, keras.Sequential)
    np.testing.assert_allclose(loaded.predict(np.ones((2, 3)), verbose=0),
                               model.predict(np.ones((2, 3)), verbose=0), rtol=1e-6)


def test_ema_weights_are_the_documented_average():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(24, 3)).astype(np.float32)
    y = rng.integers(0, 3, size=24)
    momentum = 0.6
    model = tfdp.make_private(_model())
    model.compile(optimizer=_sgd(1.0, 0.5, insecure_reproducible_seed=1, use_ema=True, ema_momentum=momentum),
                  loss=LOSS)
    raw = []
    record = keras.callbacks.LambdaCallback(on_train_batch_end=lambda *_, **__: raw.append(
        _flat([w.numpy() for w in model.trainable_weights])))
    model.fit(x, y, batch_size=6, epochs=2, verbose=0, callbacks=[record])
    assert len(raw) == 8
    ema = raw[0]  # the first step's weights start the average
    for w in raw[1:]:
        ema = momentum * ema + (1 - momentum) * w
    final = _flat([w.numpy() for w in model.trainable_weights])
    np.testing.assert_allclose(final, ema, rtol=1e-5, atol=1e-6)
    assert np.linalg.norm(final - raw[-1]) > 1e-3  # evaluation sees the average, not the last
