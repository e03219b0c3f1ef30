"""The training recipe the main job uses by default, and where it came from.

`RECIPE` was chosen by `tfdp.run.sweep` (`python scripts/sweep.py --output_dir=recipes/digits`;
the ranking is committed in `recipes/digits/`) on a validation split of the digits
training examples, never on the test split, for Gaussian RegN-DP-SGD at epsilon 1.62.
Every method of the comparison, No-DP included, trains with it (the same model and the
same steps). Its model, `prior_linear`, is a DP head on features pretrained on public
synthetic digits (`tfdp.models.pretrained`), and logistic regression on standardized
features for any input that is not an 8x8x1 digit. `hyperparameter_paragraph` says in a
run's privacy statement how its hyperparameters were chosen and what that costs.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional

import keras

from tfdp.accounting.statement import with_paragraph
from tfdp.models.pretrained import has_public_prior, prior_statement
from tfdp.run.config import RunConfig

# The data set the recipe was tuned on and the recorded sweep.
RECIPE_DATASET = "digits"
RECIPE_RECORD = "recipes/digits/recipe_sweep.json"
RECIPE_COMMAND = "python scripts/sweep.py --output_dir=recipes/digits"
RECIPE: Dict[str, Any] = dict(
    model="prior_linear",
    batch_size=512,
    epochs=40,
    learning_rate=0.5,
    optimizer="sgd",
    learning_rate_schedule="constant",
    ema_momentum=None,
    augmentation="none",
    augmentation_multiplicity=1,
)


def recipe_config(**overrides: Any) -> RunConfig:
    """A RunConfig with the recipe's settings (and `overrides`)."""
    return RunConfig(**{**RECIPE, **overrides})


def uses_recipe(config: RunConfig) -> bool:
    """True when every recipe setting of `config` is the recipe's."""
    return all(getattr(config, name) == value for name, value in RECIPE.items())


def hyperparameter_paragraph(config: RunConfig) -> str:
    """The privacy statement's words on how the run's hyperparameters were chosen."""
    if uses_recipe(config) and config.dataset == RECIPE_DATASET:
        return ("Hyperparameters: tfdp's recipe defaults, chosen before this run by a sweep on "
                f"a validation split of this data set's training examples ({RECIPE_RECORD}; "
                "the test split was not used). That sweep read the training data and its "
                "privacy cost is NOT included in epsilon (Papernot and Steinke, 2022, bound "
                "what tuning costs); on any other data set the same defaults are fixed in "
                "advance and cost nothing.")
    if uses_recipe(config):
        return ("Hyperparameters: tfdp's recipe defaults, fixed in advance (tuned on "
                f"{RECIPE_DATASET}, not on this data), so choosing them costs no privacy.")
    return ("Hyperparameters: as given for this run. If they were tuned on this data, that "
            "tuning is not covered by epsilon.")


def with_hyperparameter_paragraph(record: Any, config: RunConfig,
                                  model: Optional[keras.Model] = None) -> Any:
    """`record` (a frozen privacy record with a `statement`) with the paragraphs added:
    how the hyperparameters were chosen, and the public prior when `model` holds one."""
    statement = with_paragraph(record.statement, hyperparameter_paragraph(config))
    if model is not None and has_public_prior(model):
        statement = with_paragraph(statement, prior_statement(config.dataset, model))
    return dataclasses.replace(record, statement=statement)
