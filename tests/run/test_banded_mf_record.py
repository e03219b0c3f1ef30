"""The recorded answer to "does banded DP-MF beat DP-SGD at equal epsilon?"
(recipes/banded_mf/<regime>.json): each is the study its command runs, its choices come from
its own validation rows, its test rows use those choices at the same epsilon, and the docs
quote its figures."""

import importlib.util
import json
import math
import pathlib

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
FOLDER = ROOT / "recipes" / "banded_mf"


def _study():
    spec = importlib.util.spec_from_file_location(
        "compare_banded_mf", FOLDER / "compare_banded_mf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


STUDY = _study()


def _record(regime):
    return json.loads((FOLDER / f"{regime}.json").read_text())


@pytest.mark.parametrize("regime", list(STUDY.REGIMES))
def test_the_record_is_the_study_its_command_runs(regime):
    record, study = _record(regime), STUDY.REGIMES[regime]
    assert record["command"] == f"python recipes/banded_mf/compare_banded_mf.py --regimes={regime}"
    assert record["arms"] == {a.name: {k: list(v) for k, v in a.grid} for a in study["arms"]}
    assert record["arm_settings"] == {"dp_sgd": {"mechanism": "gaussian"},
                                      "banded_mf": {"mechanism": "banded_mf"}}
    # Both arms tune the same learning rates; banded MF also chooses b.
    assert record["arms"]["dp_sgd"]["learning_rate"] == record["arms"]["banded_mf"]["learning_rate"]
    base = study["base"]
    for key in ("target_epsilon", "delta", "model", "batch_size", "epochs", "dataset"):
        assert record["base"][key] == getattr(base, key), key
    assert record["seeds"] == 3 and record["validation_fraction"] == 0.2


@pytest.mark.parametrize("regime", list(STUDY.REGIMES))
def test_each_choice_is_the_argmax_of_its_own_validation_means(regime):
    record = _record(regime)
    means = {}
    for name, grid in record["arms"].items():
        rows = [r for r in record["validation"] if r["arm"] == name]
        assert len(rows) == int(np.prod([len(v) for v in grid.values()]))
        for row in rows:
            assert len(row["val_accuracies"]) == record["seeds"]
            assert np.isclose(row["val_accuracy"], np.mean(row["val_accuracies"]))
            assert np.isclose(row["val_accuracy_std"], np.std(row["val_accuracies"]))
        best = max(rows, key=lambda r: r["val_accuracy"])
        assert record["chosen"][name] == {k: best[k] for k in grid}
        means[name] = best["val_accuracy"]
    assert record["best_on_validation"] == max(means, key=means.get)


@pytest.mark.parametrize("regime", list(STUDY.REGIMES))
def test_the_test_rows_trained_the_chosen_settings_at_the_same_epsilon(regime):
    record = _record(regime)
    target = record["base"]["target_epsilon"]
    assert [row["arm"] for row in record["test"]] == ["dp_sgd", "banded_mf"]
    for row in record["test"]:
        assert {k: row[k] for k in record["chosen"][row["arm"]]} == record["chosen"][row["arm"]]
        assert len(row["test_accuracies"]) == record["seeds"]
        assert np.isclose(row["test_accuracy"], np.mean(row["test_accuracies"]))
        assert np.isclose(row["test_accuracy_std"], np.std(row["test_accuracies"]))
        # Calibrated to the target from below, and close to it: equal budgets.
        assert target - 0.01 <= row["epsilon"] <= target + 1e-6, row
    for row in record["validation"]:
        assert target - 0.01 <= row["epsilon"] <= target + 1e-6, row
    dp_sgd, banded = record["test"]
    # Banded MF's steps round up to whole cycles of b; each arm's steps fill its epochs.
    epochs, batch = record["base"]["epochs"], record["base"]["batch_size"]
    n = STUDY.RENDERED_TRAIN if record["base"]["dataset"] == "rendered_digits" else 1437
    assert dp_sgd["steps"] == epochs * math.ceil(n / batch)
    assert banded["steps"] == epochs * banded["bands"] * math.ceil(n / batch / banded["bands"])
    # Correlated noise needs a larger multiplier for the same epsilon (fewer, denser
    # participations), which its correlation then partly cancels.
    assert banded["noise_multiplier"] > dp_sgd["noise_multiplier"]
    assert batch * banded["bands"] <= n


def _docs_figure(mean, std):
    return f"{mean:.3f} ± {std:.3f}"


def test_the_docs_quote_the_records_figures():
    page = (ROOT / "docs" / "accounting.md").read_text()
    for regime in STUDY.REGIMES:
        record = _record(regime)
        for row in record["test"]:
            assert _docs_figure(row["test_accuracy"], row["test_accuracy_std"]) in page, row
            assert f"{row['epsilon']:.2f}" in page
        for row in record["validation"]:
            assert _docs_figure(row["val_accuracy"], row["val_accuracy_std"]) in page, row
            label = f"b = {row['bands']}" if row["arm"] == "banded_mf" else "DP-SGD"
            assert label in page
