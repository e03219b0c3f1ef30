"""Accounting over groups (user-level DP): the same arithmetic at the group sampling rate,
said per patient; a callback whose unit disagrees with the model's clipping is refused."""

import math

import dp_accounting
import numpy as np
import pytest
import keras

import tfdp

NUM_PATIENTS, PATIENTS_PER_BATCH, SIGMA, STEPS, DELTA = 480, 160, 2.0, 60, 1e-5
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)


def _reference_epsilon(num_units, batch, sigma, steps, delta):
    """dp_accounting's RDP epsilon of `steps` Poisson-sampled Gaussian steps at q = batch/units."""
    accountant = dp_accounting.rdp.RdpAccountant()
    event = dp_accounting.PoissonSampledDpEvent(batch / num_units,
                                                dp_accounting.GaussianDpEvent(sigma))
    accountant.compose(event, steps)
    return accountant.get_epsilon(delta)


def test_epsilon_per_patient_matches_dp_accounting_at_the_patient_sampling_rate():
    result = tfdp.compute_epsilon(NUM_PATIENTS, PATIENTS_PER_BATCH, SIGMA, steps=STEPS,
                                  delta=DELTA, privacy_unit="patient")
    want = _reference_epsilon(NUM_PATIENTS, PATIENTS_PER_BATCH, SIGMA, STEPS, DELTA)
    assert result.epsilon == pytest.approx(want, rel=1e-6)
    assert result.privacy_unit == "patient"
    assert result.sampling_probability == pytest.approx(1 / 3)
    assert result.to_dict()["privacy_unit"] == "patient"
    # Accounting the same run over images (3 per patient) would understate epsilon.
    per_image = _reference_epsilon(3 * NUM_PATIENTS, PATIENTS_PER_BATCH, SIGMA, STEPS, DELTA)
    assert per_image < 0.8 * result.epsilon


def test_statement_says_per_patient_and_the_group_sampling_rate():
    text = tfdp.compute_epsilon(NUM_PATIENTS, PATIENTS_PER_BATCH, SIGMA, steps=STEPS,
                                privacy_unit="patient").statement
    flat = " ".join(text.split())
    assert "480 patients" in flat
    assert "Patient-level (user-level) DP" in flat
    assert "each patient joining each step independently with probability q = 0.3333" in flat
    assert "Example-level" not in flat
    example = " ".join(tfdp.compute_epsilon(NUM_PATIENTS, PATIENTS_PER_BATCH, SIGMA,
                                            steps=STEPS).statement.split())
    assert "Example-level DP" in example and "patient" not in example


@pytest.mark.parametrize("bad", ["", "patient 2", "two words", 3, None])
def test_bad_privacy_unit_is_refused(bad):
    with pytest.raises(ValueError, match="privacy_unit"):
        tfdp.compute_epsilon(100, 10, 1.0, steps=10, privacy_unit=bad)


def test_group_unit_needs_poisson_sampling():
    with pytest.raises(ValueError, match="sampling='poisson'"):
        tfdp.compute_epsilon(100, 10, 1.0, steps=10, privacy_unit="patient", sampling="shuffle")


def _private(grouped):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model = tfdp.make_private(model, grouped=grouped)
    model.compile(optimizer=tfdp.DPKerasSGDOptimizer(l2_norm_clip=1.0, noise_multiplier=1.0,
                                                     learning_rate=0.1, expected_batch_size=2),
                  loss=LOSS)
    return model


def test_callback_refuses_a_unit_the_model_does_not_clip_by():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 3)).astype("float32"), rng.integers(0, 2, 8)
    flat = _private(grouped=False)
    with pytest.raises(ValueError, match="grouped=True"):
        flat.fit(x, y, batch_size=4, verbose=0,
                 callbacks=[tfdp.PrivacyCallback(4, privacy_unit="patient", verbose=0)])
    grouped = _private(grouped=True)
    batches = tfdp.data.poisson_batches(x, y, 2, groups=np.repeat(np.arange(4), 2), insecure_reproducible_seed=0)
    with pytest.raises(ValueError, match="privacy_unit='patient'"):
        grouped.fit(batches, verbose=0, callbacks=[tfdp.PrivacyCallback(8, verbose=0)])


def test_callback_reports_epsilon_per_patient_from_the_ledger():
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(6), [1, 2, 3, 1, 2, 3])
    x, y = rng.normal(size=(12, 3)).astype("float32"), rng.integers(0, 2, 12)
    model = _private(grouped=True)
    privacy = tfdp.PrivacyCallback(6, privacy_unit="patient", verbose=0)
    history = model.fit(tfdp.data.poisson_batches(x, y, 2, groups=groups, insecure_reproducible_seed=0), epochs=2,
                        verbose=0, callbacks=[privacy])
    steps = 2 * math.ceil(6 / 2)
    assert int(model.optimizer.iterations.numpy()) == steps
    want = _reference_epsilon(6, 2, 1.0, steps, 1e-5)
    assert history.history["epsilon"][-1] == pytest.approx(want, rel=1e-6)
    assert privacy.result.privacy_unit == "patient"
