"""tfdp.run.comparison without training: the method table, the plan, rows, aggregation, outputs."""

import csv
import dataclasses
import json
import math
import re
import types

import pytest

from tfdp.run import comparison, comparison_table
from tfdp.run.comparison import METHOD_SETTINGS, CompareConfig

# The contract in docs/api/index.md: compare.py's method keys.
CONTRACT_KEYS = ("no_dp", "gaussian_regn", "gaussian_rann", "laplace_regn", "laplace_rann",
                 "residual_perturbation", "neuraldp")


def test_method_table_keeps_the_contract_keys_and_every_run_config_validates():
    assert set(CONTRACT_KEYS) <= set(METHOD_SETTINGS)
    config = CompareConfig(target_epsilon=2.0, sweep_epsilons=(1.0, 4.0)).validated()
    plan = config.plan()
    # 6 DP-SGD methods (one per patient) and NeuralDP x {2, 1, 4} targets + 1 No-DP + 1
    # residual perturbation run.
    assert len(plan) == 23
    names = {}
    for key, run_config in plan:
        resolved = run_config.validated()  # every planned run is a valid RunConfig
        names[key] = resolved.method_name()
        assert run_config.attack_types == comparison.DEFAULT_ATTACKS
        assert run_config.model_dir is None and run_config.export_dir is None
    assert names == {
        "no_dp": "No-DP", "gaussian_regn": "Gaussian RegN-DP-SGD",
        "gaussian_rann": "Gaussian RanN-DP-SGD", "laplace_regn": "Laplace RegN-DP-SGD",
        "laplace_rann": "Laplace RanN-DP-SGD", "residual_perturbation": "Residual perturbation",
        "neuraldp": "NeuralDP", "gaussian_rann_drop": "Gaussian RanN-DP-SGD (drop)",
        "gaussian_regn_patient": "Gaussian RegN-DP-SGD per patient"}
    # The sound variant drops noiseless steps whatever --on_skip says for the paper's RanN.
    drop = dict(plan)["gaussian_rann_drop"].validated()
    assert drop.on_skip == "drop" and drop.has_formal_guarantee
    assert not dict(plan)["gaussian_rann"].validated().has_formal_guarantee


def test_run_config_sets_each_mechanisms_own_clip_and_the_random_schedules_coin():
    base = dataclasses.replace(CompareConfig().base, l2_norm_clip=0.7, l1_norm_clip=3.0)
    config = CompareConfig(base=base, noise_probability=0.3, on_skip="drop").validated()
    gaussian = config.run_config("gaussian_rann", 2.0, seed=5)
    assert (gaussian.l2_norm_clip, gaussian.l1_norm_clip) == (0.7, None)
    assert (gaussian.noise_probability, gaussian.on_skip, gaussian.seed) == (0.3, "drop", 5)
    assert gaussian.target_epsilon == 2.0 and gaussian.noise_multiplier is None
    laplace = config.run_config("laplace_regn", 2.0, seed=0)
    assert (laplace.l2_norm_clip, laplace.l1_norm_clip) == (None, 3.0)
    assert laplace.noise_probability == 1.0  # the regular schedule: noise every step
    no_dp = config.run_config("no_dp", None, seed=0)
    assert (no_dp.l2_norm_clip, no_dp.l1_norm_clip, no_dp.target_epsilon) == (None, None, None)
    residual = config.run_config("residual_perturbation", None, seed=0)
    assert residual.gamma == 0.5 and residual.target_epsilon is None
    neuraldp = config.run_config("neuraldp", 2.0, seed=0)
    assert neuraldp.target_epsilon == 2.0 and neuraldp.activation_clip_norm == 1.0
    assert neuraldp.on_skip == "release"  # DP-SGD settings stay at their defaults


def test_a_fixed_noise_multiplier_replaces_the_targets():
    config = CompareConfig(target_epsilon=None, noise_multiplier=1.5, sweep_epsilons=(),
                           methods=("gaussian_regn", "neuraldp")).validated()
    assert config.targets == [None]
    for _, run_config in config.plan():
        assert run_config.noise_multiplier == 1.5 and run_config.target_epsilon is None


@pytest.mark.parametrize("settings, message", [
    (dict(methods=("no_dp", "bogus")), "Unknown methods ['bogus']"),
    (dict(methods=()), "Unknown methods"),
    (dict(noise_multiplier=1.0), "exactly one shared budget"),
    (dict(target_epsilon=None, noise_multiplier=1.0), "--sweep_epsilons needs --target_epsilon"),
    (dict(noise_probability=1.0), "must be in (0, 1) for the RanN methods"),
    (dict(noise_probability=1.5), "noise_probability"),
    (dict(seeds=0), "seeds"),
    (dict(sweep_epsilons=(1.0, -2.0)), "sweep_epsilons"),
    (dict(on_skip="keep"), "on_skip"),
])
def test_validated_refuses_settings_that_cannot_run(settings, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        CompareConfig(**settings).validated()


def test_validated_accepts_a_probability_of_one_without_rann_methods():
    config = CompareConfig(methods=["no_dp", "gaussian_regn"], noise_probability=1.0,
                           sweep_epsilons=[], attack_types=()).validated()
    assert config.methods == ("no_dp", "gaussian_regn") and config.sweep_epsilons == ()
    assert config.attack_types is None  # an empty list of attacks: no attack


def _fake_result(config, *, epsilon, noisy, steps, attack=True, claimed=None):
    privacy = types.SimpleNamespace(epsilon=epsilon, epsilon_noisy_steps_only=epsilon,
                                    statement="s")
    if claimed is not None:
        privacy.epsilon_claimed = claimed
    report = types.SimpleNamespace(auc=0.6, advantage=0.2, best_attack="threshold",
                                   epsilon_lower_bound=0.4)
    verdict = types.SimpleNamespace(empirical_epsilon_lower_bound=0.1, consistent=True,
                                    message="ok")
    return types.SimpleNamespace(
        method=config.method_name(), config=dataclasses.replace(config, noise_multiplier=1.1),
        utility=dict(accuracy=0.9, precision=0.8, recall=0.7, f1=0.75), privacy=privacy,
        ledger=dict(steps=steps, noisy_steps=noisy, dropped_steps=0, applied_steps=steps),
        history=[{}, {}], seconds_per_epoch=0.5,
        attack_report=report if attack else None, audit=verdict if attack else None)


def test_result_row_turns_a_run_result_into_the_tables_columns():
    config = CompareConfig().validated()
    rann = config.run_config("gaussian_rann", 1.62, seed=0)
    row = comparison.result_row(rann, _fake_result(rann, epsilon=math.inf, noisy=30, steps=40),
                                train_seconds=3.0)
    assert row["method"] == "Gaussian RanN-DP-SGD" and row["target_epsilon"] == 1.62
    assert row["noise_multiplier"] == 1.1 and math.isinf(row["epsilon"])
    assert (row["steps_per_epoch"], row["noisy_steps_per_epoch"]) == (20.0, 15.0)
    assert row["noisy_steps_percent"] == 75.0 and row["epsilon_claimed"] is None
    assert (row["attack_auc"], row["epsilon_lower_bound"], row["audit_consistent"]) == (
        0.6, 0.1, True)
    assert row["epsilon_lower_bound_library"] == 0.4
    neuraldp = config.run_config("neuraldp", 1.62, seed=0)
    row = comparison.result_row(
        neuraldp, _fake_result(neuraldp, epsilon=math.inf, noisy=0, steps=40, attack=False,
                               claimed=1.6), train_seconds=1.0)
    assert row["noisy_steps_percent"] is None and row["epsilon_claimed"] == 1.6
    assert row["attack_auc"] is None and "audit_consistent" not in row
    no_dp = config.run_config("no_dp", None, seed=0)
    row = comparison.result_row(no_dp, _fake_result(no_dp, epsilon=math.inf, noisy=0, steps=40),
                                train_seconds=1.0)
    assert row["target_epsilon"] is None and row["noisy_steps_percent"] == 0.0


def test_table_csv_and_json_spell_infinity_inf(tmp_path):
    rows = [
        {"method": "No-DP", "target_epsilon": None, "epsilon": math.inf,
         "epsilon_noisy_steps_only": math.inf, "accuracy": 0.9, "accuracy_std": 0.01},
        {"method": "Gaussian RegN-DP-SGD", "target_epsilon": 1.0, "epsilon": 0.987,
         "epsilon_noisy_steps_only": 0.987, "accuracy": 0.5, "accuracy_std": 0.02},
    ]
    text = comparison_table.format_table(rows)
    lines = text.splitlines()
    assert lines[0].split()[:6] == ["method", "acc", "prec", "recall", "f1", "eps"]
    assert "inf" in lines[2] and "0.900±0.010" in lines[2] and "0.99" in lines[3]
    path = tmp_path / "t.csv"
    comparison_table.write_csv(rows, str(path))
    with open(path) as f:
        read = list(csv.DictReader(f))
    assert list(read[0])[:len(comparison_table.TABLE_COLUMNS)] == list(
        comparison_table.TABLE_COLUMNS)
    assert "accuracy_std" in read[0] and read[0]["epsilon"] == "inf"
    assert read[1]["epsilon"] == "0.987" and read[0]["target_epsilon"] == ""
    result = comparison.ComparisonResult(
        config=CompareConfig(), dataset={"name": "x"}, budget="target epsilon 1", notes="n",
        table=rows, sweep=[], runs=rows, files={})
    comparison_table.write_json(result.to_dict(), str(tmp_path / "c.json"))
    record = json.loads((tmp_path / "c.json").read_text())
    assert [r["method"] for r in record["table"]] == ["No-DP", "Gaussian RegN-DP-SGD"]
    assert record["table"][0]["epsilon"] == "inf" and record["table"][1]["accuracy"] == 0.5
    assert record["settings"]["methods"] == list(comparison.DEFAULT_METHODS)
    assert record["settings"]["base"]["epochs"] == CompareConfig().base.epochs


def test_cell_keeps_its_digits_and_spells_missing_and_infinite_values():
    assert comparison_table.cell(None) == "-"
    assert comparison_table.cell(math.inf, 2) == "inf"
    assert comparison_table.cell(1.23456, 2) == "1.23"
    assert comparison_table.cell(float("nan")) == "nan"
    assert comparison_table.cell(7) == "7"
