"""A make_private model's fit refuses data, optimizer and callback that state different
privacy facts, before any step is taken."""

import keras
import numpy as np
import pytest

import tfdp

N = 512


def _data(n=N):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 8)).astype("float32"), rng.integers(0, 2, n)


def _compiled(grouped=False, **optimizer_arguments):
    model = tfdp.make_private(keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)]),
                              grouped=grouped)
    arguments = dict(l2_norm_clip=1.0, noise_multiplier=1.0, learning_rate=0.1)
    arguments.update(optimizer_arguments)
    model.compile(optimizer=tfdp.DPKerasSGDOptimizer(**arguments),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                                  reduction=None))
    return model


def _refused(model, data, message, **fit_arguments):
    with pytest.raises(ValueError, match=message):
        model.fit(data, epochs=1, verbose=0, **fit_arguments)
    assert int(model.optimizer.iterations) == 0 and int(model.optimizer.noisy_steps) == 0


def test_an_expected_batch_size_other_than_the_sampled_one_is_refused():
    # Measured before: expected_batch_size=8 on batches of 64 trained, and the statement
    # said "batch size 8, 8 steps (about 0.125 epochs)" for a whole epoch.
    x, y = _data()
    model = _compiled(expected_batch_size=8)
    _refused(model, tfdp.data.poisson_batches(x, y, 64), "expected_batch_size=64")


def test_a_callback_told_another_data_size_is_refused():
    # Measured before: num_examples=51200 on 512 examples reported 0.67 where 4.70 was spent.
    x, y = _data()
    model = _compiled(expected_batch_size=64)
    _refused(model, tfdp.data.poisson_batches(x, y, 64), "num_examples=512",
             callbacks=[tfdp.PrivacyCallback(100 * N, verbose=0)])
    _refused(model, tfdp.data.poisson_batches(x, y, 64), "batch_size",
             callbacks=[tfdp.PrivacyCallback(N, batch_size=32, verbose=0)])


def test_the_unit_given_inconsistently_is_refused():
    x, y = _data(60)
    patients = np.repeat(np.arange(20), 3)
    grouped_batches = tfdp.data.poisson_batches(x, y, 5, groups=patients)
    _refused(_compiled(expected_batch_size=5), grouped_batches, "grouped=True")
    _refused(_compiled(grouped=True, expected_batch_size=5),
             tfdp.data.poisson_batches(x, y, 5), "groups=ids")
    _refused(_compiled(grouped=True, expected_batch_size=5), grouped_batches,
             "num_examples=20", callbacks=[tfdp.PrivacyCallback(60, privacy_unit="patient",
                                                                 verbose=0)])


def test_poisson_figures_need_batches_from_the_sampler():
    x, y = _data()
    model = _compiled(expected_batch_size=64)
    # A transformation after the sampler makes a dataset nobody vouches for.
    untagged = tfdp.data.poisson_batches(x, y, 64).map(lambda a, b: (a, b))
    _refused(model, untagged, "not known to be Poisson sampled",
             callbacks=[tfdp.PrivacyCallback(N, verbose=0)])
    # The shuffled-batch figure does not hold for Poisson batches (no once-per-pass bound).
    _refused(model, tfdp.data.poisson_batches(x, y, 64), "sampling='poisson'",
             callbacks=[tfdp.PrivacyCallback(N, sampling="shuffle", verbose=0)])


def test_shuffled_arrays_are_checked_against_the_callback_and_then_train():
    x, y = _data()
    model = _compiled()
    with pytest.raises(ValueError, match="num_examples=512"):
        model.fit(x, y, batch_size=64, epochs=1, verbose=0,
                  callbacks=[tfdp.PrivacyCallback(1000, sampling="shuffle", verbose=0)])
    with pytest.raises(ValueError, match="batch_size=64"):
        model.fit(x, y, batch_size=64, epochs=1, verbose=0,
                  callbacks=[tfdp.PrivacyCallback(N, sampling="shuffle", batch_size=32,
                                                  verbose=0)])
    callback = tfdp.PrivacyCallback(N, sampling="shuffle", batch_size=64, verbose=0)
    model.fit(x, y, batch_size=64, epochs=1, verbose=0, callbacks=[callback])
    assert int(model.optimizer.iterations) == 8
    assert callback.result.adjacency == "replace-one"


def test_reproducible_batches_make_the_statement_say_so():
    x, y = _data()
    model = _compiled(expected_batch_size=64)  # the noise's key is secret
    callback = tfdp.PrivacyCallback(N, verbose=0)
    model.fit(tfdp.data.poisson_batches(x, y, 64, insecure_reproducible_seed=3), epochs=1,
              verbose=0, callbacks=[callback])
    assert callback.result.secret_randomness is False
    assert "not know that seed" in " ".join(callback.result.statement.split())
    secret = tfdp.PrivacyCallback(N, verbose=0)
    model.fit(tfdp.data.poisson_batches(x, y, 64), epochs=1, verbose=0, callbacks=[secret])
    assert secret.result.secret_randomness is True


def test_compute_epsilon_checks_its_figures_against_the_sampler():
    x, y = _data()
    batches = tfdp.data.poisson_batches(x, y, 64)
    steps = dict(noise_multiplier=1.0, steps=16)
    checked = tfdp.compute_epsilon(N, 64, batches=batches, **steps)
    assert checked.epsilon == tfdp.compute_epsilon(N, 64, **steps).epsilon
    # The two mismatches, each understating epsilon when unchecked.
    assert tfdp.compute_epsilon(100 * N, 64, **steps).epsilon < checked.epsilon
    with pytest.raises(ValueError, match=f"sampled from {N} examples"):
        tfdp.compute_epsilon(100 * N, 64, batches=batches, **steps)
    with pytest.raises(ValueError, match="sampled at 64 examples per step"):
        tfdp.compute_epsilon(N, 8, batches=batches, **steps)
    with pytest.raises(ValueError, match="sampling='poisson'"):
        tfdp.compute_epsilon(N, 64, batches=batches, sampling="shuffle", **steps)
    with pytest.raises(ValueError, match="sample single examples"):
        tfdp.compute_epsilon(N, 64, batches=batches, privacy_unit="patient", **steps)


def test_compute_epsilon_refuses_a_poisson_figure_for_untagged_batches():
    x, y = _data()
    mapped = tfdp.data.poisson_batches(x, y, 64).map(lambda a, b: (a * 2, b))
    steps = dict(noise_multiplier=1.0, steps=16)
    with pytest.raises(ValueError, match="not known to be Poisson sampled"):
        tfdp.compute_epsilon(N, 64, batches=mapped, **steps)
    shuffled = tfdp.compute_epsilon(N, 64, batches=mapped, sampling="shuffle", **steps)
    assert shuffled.adjacency == "replace-one"


def test_compute_epsilon_checks_the_unit_and_the_seed_of_grouped_batches():
    x, y = _data()
    groups = np.arange(N) // 4  # 128 patients of 4 examples
    batches = tfdp.data.poisson_batches(x, y, 16, groups=groups, insecure_reproducible_seed=1)
    steps = dict(noise_multiplier=1.0, steps=8)
    with pytest.raises(ValueError, match="sample whole groups"):
        tfdp.compute_epsilon(128, 16, batches=batches, **steps)
    result = tfdp.compute_epsilon(128, 16, batches=batches, privacy_unit="patient", **steps)
    assert result.secret_randomness is False and result.privacy_unit == "patient"
    with pytest.raises(ValueError, match="sampled from 128 groups"):
        tfdp.compute_epsilon(N, 16, batches=batches, privacy_unit="patient", **steps)
