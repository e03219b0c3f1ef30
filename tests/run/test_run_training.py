"""tfdp.run.train_and_evaluate: the RunResult, its JSON record, attacks and the audit."""

import json
import math

import pytest

from tfdp import run
from tfdp.accounting import PrivacyRecord

_SMALL = dict(dataset="digits", epochs=1, batch_size=32, max_train_examples=96,
              max_test_examples=40, learning_rate=0.5, model="mlp")


def _quiet(*_):
    pass


def test_dp_run_result_and_record(tmp_path):
    result = run.train_and_evaluate(
        run.RunConfig(target_epsilon=4.0, attack_types=("threshold",), **_SMALL), log=_quiet)
    assert isinstance(result, run.RunResult)
    assert isinstance(result.privacy, PrivacyRecord)
    # The calibrated multiplier is in the config that was run; the given one is untouched.
    assert result.config.noise_multiplier > 0 and result.config.l2_norm_clip == 1.0
    assert result.method == "Gaussian RegN-DP-SGD"
    assert result.ledger["steps"] == result.ledger["applied_steps"] == 3
    assert result.privacy.epsilon <= 4.0 * 1.0001
    assert result.attack_report is not None and result.audit is not None
    record = result.to_dict()
    assert {"method", "config", "dataset", "utility", "privacy", "ledger", "history",
            "seconds_per_epoch", "attacks", "audit"} <= set(record)
    assert "export_path" not in record and "model" not in record
    assert record["config"]["attack_types"] == ["threshold"]
    path = tmp_path / "m.json"
    run.write_metrics(result, str(path))
    assert json.loads(path.read_text())["privacy"]["epsilon"] == pytest.approx(
        result.privacy.epsilon)


def test_no_dp_record_is_infinite_and_strict_json(tmp_path):
    result = run.train_and_evaluate(run.RunConfig(mechanism="none", **_SMALL), log=_quiet)
    assert math.isinf(result.privacy.epsilon) and result.privacy.accountant is None
    assert result.ledger == {"applied_steps": 3, "noisy_steps": 0, "dropped_steps": 0,
                             "steps": 3}
    assert result.attack_report is None and result.audit is None
    text = json.dumps(result.to_dict(), allow_nan=False)
    assert json.loads(text)["privacy"]["epsilon"] == "inf"


def test_the_accountant_calibrates_and_reports_alike():
    """PLD's bound is the tighter: the same target takes less noise, and each run reports
    its own accountant's epsilon at the target (never above it)."""
    results = {acc: run.train_and_evaluate(run.RunConfig(target_epsilon=2.0, accountant=acc,
                                                          **_SMALL), log=_quiet)
               for acc in ("rdp", "pld")}
    for acc, result in results.items():
        assert result.privacy.accountant == acc
        assert result.privacy.epsilon == pytest.approx(2.0, rel=1e-3)
        assert result.privacy.epsilon <= 2.0 * 1.0001
        assert acc.upper() + " accounting" in " ".join(result.privacy.statement.split())
    assert results["pld"].config.noise_multiplier < 0.99 * results["rdp"].config.noise_multiplier
    # The same noise accounted by RDP gives the larger epsilon: both are upper bounds.
    from tfdp.accounting import compute_epsilon
    rdp_of_pld_run = compute_epsilon(96, 32, results["pld"].config.noise_multiplier, steps=3,
                                     delta=1e-5, accountant="rdp").epsilon
    assert rdp_of_pld_run > results["pld"].privacy.epsilon


@pytest.mark.parametrize("record", [False, True], ids=["default", "record_training_metrics"])
def test_training_metrics_are_recorded_only_when_asked(record):
    """The training loss and accuracy are noiseless functions of the private batches: off by
    default in the history, the epoch lines and the JSON; on with the flag, labelled."""
    lines = []
    config = run.RunConfig(noise_multiplier=1.0, record_training_metrics=record,
                           **dict(_SMALL, epochs=2))
    result = run.train_and_evaluate(config, log=lines.append)
    record_json = json.loads(json.dumps(result.to_dict()))
    assert record_json["config"]["record_training_metrics"] is record
    history = record_json["history"]
    assert [h["epoch"] for h in history] == [1, 2] and all(h["steps"] == 3 for h in history)
    for epoch in history:
        assert 0.0 <= epoch["val_accuracy"] <= 1.0 and epoch["val_loss"] > 0.0
        assert "dp_steps" not in epoch
        assert ("loss" in epoch, "accuracy" in epoch) == (record, record)
    epoch_lines = [line for line in lines if line.startswith("epoch ")]
    assert len(epoch_lines) == 2 and all("test_accuracy=" in line for line in epoch_lines)
    assert all(("train_loss=" in line) is record for line in epoch_lines)
    if record:
        assert history[0]["loss"] > 0.0
        assert "NOT covered by the DP guarantee" in record_json["training_metrics_note"]
    else:
        assert "training_metrics_note" not in record_json
