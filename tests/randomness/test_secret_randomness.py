"""No seed, checkpoint or saved file replays the DP noise or the batches; the opt-in is labelled.

The adversary of these tests knows every user seed (the README's `--seed` is 0 by default)
and reseeds everything exactly as the training process did.
"""

import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdp
from tfdp.randomness import SecretKey, SecretRandomnessWarning

N, BATCH = 64, 16


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(N, 5)).astype("float32"), rng.integers(0, 3, size=N)


def _train(epochs=2, optimizer_kwargs=None, sampler_kwargs=None):
    """A seeded user's DP training: (initial weights, final weights, ledger, optimizer)."""
    x, y = _data()
    keras.utils.set_random_seed(0)  # Keras's advice for reproducible training
    model = tfdp.make_private(keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)]))
    optimizer = tfdp.DPKerasSGDOptimizer(
        l2_norm_clip=1.0, noise_multiplier=1.0, learning_rate=0.5, expected_batch_size=BATCH,
        **(optimizer_kwargs or {}))
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction=None))
    initial = [w.copy() for w in model.get_weights()]
    batches = tfdp.data.poisson_batches(x, y, BATCH, **(sampler_kwargs or {}))
    model.fit(batches, epochs=epochs, verbose=0)
    ledger = (int(optimizer.iterations.numpy()), int(optimizer.noisy_steps.numpy()))
    return initial, model.get_weights(), ledger, optimizer


def test_the_same_user_seed_trains_different_dp_models_from_the_same_start():
    first, second = _train(), _train()
    for a, b in zip(first[0], second[0]):
        np.testing.assert_array_equal(a, b)  # the seed still fixes the initial weights
    assert first[2] == second[2]  # and the ledger: same number of steps, all noisy
    assert not np.allclose(first[1][0], second[1][0], atol=1e-4)  # not the noise


def test_the_insecure_opt_in_reproduces_a_run_and_its_statement_says_so():
    kwargs = dict(optimizer_kwargs=dict(insecure_reproducible_seed=3),
                  sampler_kwargs=dict(insecure_reproducible_seed=3))
    first, second = _train(**kwargs), _train(**kwargs)
    for a, b in zip(first[1], second[1]):
        np.testing.assert_array_equal(a, b)
    optimizer = second[3]
    assert optimizer.secret_randomness is False
    result = tfdp.accounting.epsilon_from_ledger(optimizer, N)
    assert result.secret_randomness is False
    assert "does not know that seed" in " ".join(result.statement.split())
    secret = tfdp.accounting.epsilon_from_ledger(_train(epochs=1)[3], N)
    assert secret.secret_randomness is True and "seed" not in secret.statement


def test_a_seed_given_to_the_sampler_warns_and_reaches_no_batch():
    x = np.arange(200, dtype=np.float32)[:, None]
    batches = []
    for _ in range(2):
        tf.random.set_seed(0)
        with pytest.warns(SecretRandomnessWarning, match="insecure_reproducible_seed"):
            ds = tfdp.data.poisson_batches(x, None, 20, seed=0, num_steps=5)
        batches.append([sorted(b.numpy()[:, 0].tolist()) for b in ds])
    assert batches[0] != batches[1]
    # Each pass of one dataset draws new batches too.
    assert [sorted(b.numpy()[:, 0].tolist()) for b in ds] != batches[1]


def test_a_seed_given_to_the_optimizer_warns_and_reaches_no_noise():
    with pytest.warns(SecretRandomnessWarning, match="no longer reaches the noise"):
        optimizer = tfdp.DPKerasSGDOptimizer(l2_norm_clip=1.0, noise_multiplier=1.0, seed=3)
    assert optimizer.secret_randomness and "seed" not in optimizer.get_config()


def _noise(optimizer, variables):
    """One step's noise on zero gradients (the noised sum of nothing), per variable."""
    zeros = [tf.zeros_like(v) for v in variables]
    return [g.numpy() for g in optimizer.privatize_clipped_sum(zeros, 1, 1)]


def test_no_two_variables_steps_or_optimizers_share_noise():
    variables = [tf.Variable(tf.zeros([50])), tf.Variable(tf.zeros([50]))]
    first = tfdp.DPKerasSGDOptimizer(l2_norm_clip=1.0, noise_multiplier=1.0)
    step_1 = _noise(first, variables)
    step_2 = _noise(first, variables)  # same ledger step (nothing applied): new noise anyway
    tf.random.set_seed(1234)
    other = tfdp.DPKerasSGDOptimizer(l2_norm_clip=1.0, noise_multiplier=1.0)
    draws = step_1 + step_2 + _noise(other, variables)
    for i in range(len(draws)):
        assert np.std(draws[i]) > 0.5
        for j in range(i):
            assert np.abs(draws[i] - draws[j]).min() > 0, (i, j)


def test_the_key_is_in_no_checkpoint_and_no_keras_file(tmp_path):
    _, _, _, optimizer = _train(epochs=1)
    key = optimizer._secret_key._key.numpy()
    saved = tf.train.Checkpoint(optimizer=optimizer).write(str(tmp_path / "ckpt"))
    for name, _ in tf.train.list_variables(saved):
        assert "secret" not in name
    checkpoint_bytes = b"".join(p.read_bytes() for p in tmp_path.glob("ckpt*"))
    assert key.tobytes() not in checkpoint_bytes
    model_path = tmp_path / "model.keras"
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    model = tfdp.make_private(model)
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction=None))
    model.save(model_path)
    with zipfile.ZipFile(model_path) as archive:
        assert all(key.tobytes() not in archive.read(n) for n in archive.namelist())
    loaded = keras.models.load_model(model_path).optimizer
    assert not np.array_equal(loaded._secret_key._key.numpy(), key)  # a new key


def test_secret_keys_are_fresh_entropy_and_insecure_keys_follow_their_seed():
    tf.random.set_seed(0)
    a = SecretKey("noise")
    tf.random.set_seed(0)
    b = SecretKey("noise")
    assert not np.array_equal(a._key.numpy(), b._key.numpy())
    assert "secret" in repr(a) and str(a._key.numpy()[0]) not in repr(a)
    c, d = SecretKey("noise", 7), SecretKey("noise", 7)
    np.testing.assert_array_equal(c.step_seed(0).numpy(), d.step_seed(0).numpy())
    # Each draw moves on, and the ledger step is part of the seed.
    assert not np.array_equal(c.step_seed(0).numpy(), c.step_seed(0).numpy())
    assert not np.array_equal(SecretKey("noise", 7).step_seed(1).numpy(),
                              SecretKey("noise", 7).step_seed(2).numpy())
    with pytest.raises(ValueError, match="insecure_reproducible_seed"):
        SecretKey("noise", "7")
