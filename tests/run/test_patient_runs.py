"""--privacy_unit=patient in the run: settings, patient ids, a per-patient run's ledger and
record, the attack models' patients, and compare's per-patient row."""

import dataclasses
import math

import numpy as np
import pytest

import tfdp
from tfdp import run
from tfdp.run.comparison import CompareConfig
from tfdp.run.leakage import patient_ids_of
from tfdp.run.training import load_data, patient_data

_SMALL = dict(dataset="digits", epochs=2, batch_size=20, max_train_examples=150,
              max_test_examples=40, learning_rate=0.5, model="mlp", noise_multiplier=1.5)


def _quiet(*_):
    pass


@pytest.mark.parametrize("fields,message", [
    (dict(mechanism="none", noise_multiplier=None), "no such step"),
    (dict(mechanism="residual_perturbation", gamma=0.5, noise_multiplier=None), "no such step"),
    (dict(sampling="shuffle"), "--sampling=poisson"),
])
def test_patient_unit_needs_a_dp_sgd_step_under_poisson_sampling(fields, message):
    with pytest.raises(ValueError, match=message):
        run.RunConfig(**{**_SMALL, "privacy_unit": "patient", **fields}).validated()


def test_cap_needs_the_patient_unit_and_bad_units_are_refused():
    with pytest.raises(ValueError, match="needs --privacy_unit=patient"):
        run.RunConfig(**_SMALL, max_examples_per_patient=2).validated()
    with pytest.raises(ValueError, match="privacy_unit"):
        run.RunConfig(**_SMALL, privacy_unit="hospital").validated()
    config = run.RunConfig(**_SMALL, privacy_unit="patient", max_examples_per_patient=2)
    assert config.validated().method_name() == "Gaussian RegN-DP-SGD per patient"


def test_digits_get_synthetic_patients_and_sources_without_ids_are_refused():
    config = run.RunConfig(**_SMALL, privacy_unit="patient").validated()
    data = load_data(config)
    grouped = patient_data(config, data, log=_quiet)
    sizes = np.unique(grouped.groups_train, return_counts=True)[1]
    assert sizes.min() >= 1 and sizes.max() <= 5 and sizes.sum() == data.num_train
    assert "synthetic" in grouped.group_source
    no_ids = dataclasses.replace(data, name="pneumonia_mnist",
                                 group_source="PneumoniaMNIST carries no patient ids")
    with pytest.raises(ValueError, match="PneumoniaMNIST carries no patient ids"):
        patient_data(config, no_ids, log=_quiet)
    # Example-level runs are left alone.
    assert patient_data(run.RunConfig(**_SMALL).validated(), data, log=_quiet) is data


def test_a_per_patient_run_is_accounted_over_patients(tmp_path):
    config = run.RunConfig(**_SMALL, privacy_unit="patient", max_examples_per_patient=3,
                           export_dir=str(tmp_path / "exports"), export_name="patients")
    result = run.train_and_evaluate(config, log=_quiet)
    grouped = patient_data(result.config, load_data(result.config), log=_quiet)
    patients = grouped.num_groups
    steps = 2 * math.ceil(patients / 20)
    assert result.ledger["steps"] == result.ledger["noisy_steps"] == steps
    accountant = result.config.accountant  # the run's (PLD by default)
    want = tfdp.compute_epsilon(patients, 20, 1.5, steps=steps, privacy_unit="patient",
                                accountant=accountant)
    assert result.privacy.epsilon == pytest.approx(want.epsilon, rel=1e-9)
    # Accounted over the examples instead, epsilon would come out smaller: never that.
    per_example = tfdp.compute_epsilon(grouped.num_train, 20, 1.5, steps=steps,
                                       accountant=accountant)
    assert per_example.epsilon < result.privacy.epsilon
    assert result.privacy.privacy_unit == "patient"
    assert result.privacy.sampling_probability == pytest.approx(20 / patients)
    statement = " ".join(result.privacy.statement.split())
    assert f"Privacy unit: patient. {patients} patients hold the 150 training examples" in statement
    assert "at most 3 of their examples" in statement and "synthetic" in statement
    record = tfdp.export.read_privacy(result.export_path)
    assert record["privacy_unit"] == "patient"
    assert record["sampling_probability"] == pytest.approx(20 / patients)


def test_attack_models_keep_each_rows_patient_and_canaries_are_their_own():
    config = run.RunConfig(**_SMALL, privacy_unit="patient").validated()
    data = patient_data(config, load_data(config), log=_quiet)
    rng = np.random.default_rng(0)
    picked = rng.permutation(data.num_train)[:40]
    canaries = rng.uniform(size=(3, *data.input_shape)).astype(np.float32)
    x = np.concatenate([data.x_train[picked], canaries])
    ids = patient_ids_of(data, x)
    assert list(ids[:40]) == [str(g) for g in data.groups_train[picked]]
    assert len(set(ids[40:])) == 3 and not set(ids[40:]) & set(ids[:40])


def test_compare_samples_patients_at_the_examples_rate():
    config = CompareConfig(methods=("gaussian_regn", "gaussian_regn_patient"),
                           sweep_epsilons=(), base=run.RunConfig(**{
                               **_SMALL, "noise_multiplier": None})).validated()
    data = load_data(config.base)
    grouped = config.with_patient_batches(data)
    patients = patient_data(grouped.run_config("gaussian_regn_patient", 1.62, 0), data,
                            log=_quiet).num_groups
    assert grouped.patients_per_batch == round(20 * patients / data.num_train)
    row = grouped.run_config("gaussian_regn_patient", 1.62, 0)
    assert row.per_patient and row.batch_size == grouped.patients_per_batch
    assert not grouped.run_config("gaussian_regn", 1.62, 0).per_patient
    # With every DP-SGD row per patient, the extra row would repeat gaussian_regn.
    everyone = CompareConfig(methods=("no_dp", "gaussian_regn", "gaussian_regn_patient"),
                             privacy_unit="patient", sweep_epsilons=()).validated()
    assert everyone.methods == ("no_dp", "gaussian_regn")
    assert everyone.run_config("gaussian_regn", 1.62, 0).per_patient
    assert not everyone.run_config("no_dp", None, 0).per_patient
