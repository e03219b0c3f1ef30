"""The recorded answer to "does fine-tuning the digits prior beat head-only under DP?"
(recipes/digits/fine_tuning.json): its choices come from its own validation rows, its test
rows use those choices, it is the study its command runs, and the docs quote its figures."""

import importlib.util
import json
import pathlib

import numpy as np

from tfdp.run.recipe import RECIPE

ROOT = pathlib.Path(__file__).resolve().parents[2]
RECORD = ROOT / "recipes" / "digits" / "fine_tuning.json"


def _record():
    return json.loads(RECORD.read_text())


def _study():
    spec = importlib.util.spec_from_file_location(
        "compare_fine_tuning", ROOT / "recipes" / "digits" / "compare_fine_tuning.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_record_is_the_study_its_command_runs_at_the_recipes_budget():
    record, study = _record(), _study()
    assert record["command"] == "python recipes/digits/compare_fine_tuning.py"
    assert record["arms"] == {arm.name: {k: list(v) for k, v in arm.grid} for arm in study.ARMS}
    base = record["base"]
    assert (base["mechanism"], base["target_epsilon"], base["delta"]) == ("gaussian", 1.62, 1e-5)
    assert base["epochs"] == RECIPE["epochs"] and base["optimizer"] == RECIPE["optimizer"]
    assert record["seeds"] == 3 and record["validation_fraction"] == 0.2
    # Head-only at the recipe's own setting is one of the candidates.
    head = record["arms"]["head"]
    assert head["model"] == [RECIPE["model"]]
    assert RECIPE["batch_size"] in head["batch_size"]
    assert RECIPE["learning_rate"] in head["learning_rate"]


def test_each_choice_is_the_argmax_of_its_own_validation_means():
    record = _record()
    means = {}
    for name, grid in record["arms"].items():
        rows = [r for r in record["validation"] if r["arm"] == name]
        assert len(rows) == int(np.prod([len(v) for v in grid.values()]))
        for row in rows:
            assert len(row["val_accuracies"]) == record["seeds"]
            assert np.isclose(row["val_accuracy"], np.mean(row["val_accuracies"]))
        best = max(rows, key=lambda r: r["val_accuracy"])
        assert record["chosen"][name] == {k: best[k] for k in grid}
        means[name] = best["val_accuracy"]
    assert record["best_on_validation"] == max(means, key=means.get)


def test_the_test_rows_trained_the_chosen_settings_at_the_budget():
    record = _record()
    assert [row["arm"] for row in record["test"]] == list(record["arms"])
    for row in record["test"]:
        assert {k: row[k] for k in record["chosen"][row["arm"]]} == record["chosen"][row["arm"]]
        assert len(row["test_accuracies"]) == record["seeds"]
        assert np.isclose(row["test_accuracy"], np.mean(row["test_accuracies"]))
        assert np.isclose(row["test_accuracy_std"], np.std(row["test_accuracies"]))
        assert row["epsilon"] <= 1.62 + 1e-6
    counts = {row["arm"]: row["trainable_parameters"] for row in record["test"]}
    # Head 512 x 10 + 10; the last block adds 4 x (256 x 128 + 128); LoRA rank r 4 x 384 r.
    assert counts == {"head": 5130, "last_block": 5130 + 131584,
                      "lora_rank4": 5130 + 6144, "lora_rank8": 5130 + 12288}


def test_the_docs_quote_the_records_figures():
    record, page = _record(), (ROOT / "docs" / "recipe.md").read_text()
    for row in record["test"]:
        assert f"{row['test_accuracy']:.3f} ± {row['test_accuracy_std']:.3f}" in page, row["arm"]
    for row in record["validation"]:
        if {k: row[k] for k in record["chosen"][row["arm"]]} == record["chosen"][row["arm"]]:
            assert f"{row['val_accuracy']:.3f} ± {row['val_accuracy_std']:.3f}" in page
