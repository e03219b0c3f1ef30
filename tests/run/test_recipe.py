"""The recipe defaults: what the main job uses, and what its privacy statement says about them."""

import dataclasses

from tfdp.accounting.statement import with_paragraph
from tfdp.run import RunConfig
from tfdp.run.comparison import CompareConfig
from tfdp.run.recipe import RECIPE, hyperparameter_paragraph, recipe_config, uses_recipe
from tfdp.run.sweep import DEFAULT_GRID


def test_the_main_job_trains_every_method_with_the_recipe():
    config = CompareConfig().validated()
    for key, run_config in config.plan():
        if run_config.mechanism in ("residual_perturbation", "neuraldp"):
            continue  # their own architecture; the other recipe settings still apply
        assert uses_recipe(run_config), key
    assert all(run_config.epochs == RECIPE["epochs"] for _, run_config in config.plan())


def test_the_recipe_is_one_of_the_swept_candidates():
    grid = dict(DEFAULT_GRID)
    for name, values in grid.items():
        assert RECIPE[name] in values, name


def test_the_statement_says_how_the_hyperparameters_were_chosen():
    tuned_here = hyperparameter_paragraph(recipe_config(dataset="digits"))
    assert "NOT included in epsilon" in tuned_here and "validation split" in tuned_here
    elsewhere = hyperparameter_paragraph(recipe_config(dataset="breast_cancer"))
    assert "fixed in advance" in elsewhere and "NOT" not in elsewhere
    changed = hyperparameter_paragraph(dataclasses.replace(recipe_config(), learning_rate=0.3))
    assert "as given" in changed
    assert "as given" in hyperparameter_paragraph(RunConfig())


def test_the_paragraph_goes_before_the_bottom_line():
    statement = "Mechanism: x.\n\nFormal guarantee: (1.000, 1e-05)-DP.\n"
    out = with_paragraph(statement, "Hyperparameters: y.")
    assert out.splitlines()[-1] == "Formal guarantee: (1.000, 1e-05)-DP."
    assert "Hyperparameters: y." in out and out.index("Mechanism") == 0
    assert with_paragraph("A.", "B.").strip().endswith("B.")


def test_the_recipe_is_the_recorded_sweeps_best():
    import json
    import pathlib

    record = json.loads((pathlib.Path(__file__).resolve().parents[2] / "recipes" / "digits"
                         / "recipe_sweep.json").read_text())
    for name, value in record["best"].items():
        assert RECIPE[name] == value, name
    for name, value in RECIPE.items():  # the settings the sweep held fixed are the recipe's too
        if name not in record["best"]:
            assert record["base"][name] == value, name
    assert record["base"]["target_epsilon"] == 1.62 and record["seeds"] == 3
    accuracies = [row["val_accuracy"] for row in record["rows"]]
    assert accuracies == sorted(accuracies, reverse=True)
