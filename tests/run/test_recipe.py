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
