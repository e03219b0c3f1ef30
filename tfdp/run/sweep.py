"""`sweep`: choose a training recipe on a validation split of the training data, never the test set.

    config = SweepConfig(grid=(("learning_rate", (0.5, 1.0)), ("batch_size", (128, 256))))
    result = sweep(config)       # every candidate x seed on the validation copy; the best by mean

Every candidate is the base `RunConfig` (Gaussian RegN-DP-SGD at the target epsilon by
default) with one combination of the grid's values, trained on `validation_fraction` less
of the training split and scored on that held-out part (`Dataset.validation_split`). The
test split never enters. The sweep touches the training data, so its choice is not covered
by the runs' epsilon: that is why tfdp's shipped defaults come from a sweep recorded once in
the repository (`results/recipe_sweep.json`) and are then fixed in advance for every run
that uses them; run your own sweep only on data whose privacy is not at stake, or account
for it.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import time
from typing import Any, Callable, Dict, List, Sequence, Tuple

import numpy as np

from tfdp._validation import check_positive_int, check_probability
from tfdp.run.comparison import run_one
from tfdp.run.comparison_table import write_csv, write_json
from tfdp.run.config import RunConfig
from tfdp.run.recipe import recipe_config
from tfdp.run.training import load_data

# Settings a sweep may vary: the recipe, not the privacy budget or the method it is tuned for.
TUNABLE: Tuple[str, ...] = (
    "model", "batch_size", "epochs", "learning_rate", "optimizer", "l2_norm_clip",
    "learning_rate_schedule", "ema_momentum", "augmentation", "augmentation_multiplicity",
)
# The grid the shipped defaults were chosen from (`python scripts/sweep.py` reruns it).
# An earlier sweep (54 candidates, in recipes/digits/'s git history) ranked logistic regression
# on standardized pixels above raw pixels and above the digits CNN; this one weighs it against
# the public prior's features.
DEFAULT_GRID: Tuple[Tuple[str, Tuple[Any, ...]], ...] = (
    ("model", ("prior_linear", "normalized_linear")),
    ("batch_size", (256, 512, 1024)),
    ("learning_rate", (0.25, 0.5, 1.0, 2.0)),
    ("ema_momentum", (None, 0.9)),
)


def _value(text: str) -> Any:
    text = text.strip()
    if text.lower() == "none":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_grid(text: str) -> Tuple[Tuple[str, Tuple[Any, ...]], ...]:
    """"a=1,2;b=x" -> (("a", (1, 2)), ("b", ("x",))) ("none" is None); ValueError if malformed."""
    grid = []
    for part in (p for p in text.split(";") if p.strip()):
        if "=" not in part:
            raise ValueError(f"--grid entries look like name=v1,v2; got {part!r}.")
        name, values = part.split("=", 1)
        grid.append((name.strip(), tuple(_value(v) for v in values.split(",") if v.strip())))
    return tuple(grid)


def grid_text(grid: Sequence[Tuple[str, Sequence[Any]]]) -> str:
    """The inverse of `parse_grid`."""
    return ";".join(f"{name}=" + ",".join("none" if v is None else str(v) for v in values)
                    for name, values in grid)


def _default_base() -> RunConfig:
    # The recipe's fixed settings (epochs, optimizer, ...); the grid varies the others.
    return recipe_config(mechanism="gaussian", target_epsilon=1.62)


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """What to tune (`grid`: (RunConfig field, values) pairs) on which validation copy."""

    grid: Tuple[Tuple[str, Tuple[Any, ...]], ...] = DEFAULT_GRID
    seeds: int = 3
    seed: int = 0
    validation_fraction: float = 0.2
    validation_seed: int = 0
    output_dir: str = "results"
    base: RunConfig = dataclasses.field(default_factory=_default_base)

    def validated(self) -> "SweepConfig":
        """A checked copy; raises ValueError for untunable fields or an invalid candidate."""
        grid = tuple((name, tuple(values)) for name, values in self.grid)
        if not grid:
            raise ValueError("The sweep's grid is empty: give at least one setting to vary.")
        for name, values in grid:
            if name not in TUNABLE:
                raise ValueError(f"A sweep cannot vary {name!r}: choose among "
                                 f"{', '.join(TUNABLE)} (the budget and method stay fixed).")
            if not values:
                raise ValueError(f"The sweep's grid gives no values for {name!r}.")
        names = [name for name, _ in grid]
        if len(set(names)) != len(names):
            raise ValueError(f"The sweep's grid names a setting twice: {names}.")
        check_positive_int("seeds", self.seeds)
        fraction = check_probability("validation_fraction", self.validation_fraction)
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"validation_fraction must be in (0, 1), got {fraction}.")
        config = dataclasses.replace(self, grid=grid)
        for candidate in config.candidates():
            candidate.validated()
        return config

    def candidates(self) -> List[RunConfig]:
        """Every combination of the grid's values on the base settings (no attacks, no files)."""
        names = [name for name, _ in self.grid]
        return [dataclasses.replace(self.base, attack_types=None, model_dir=None,
                                    export_dir=None, **dict(zip(names, values)))
                for values in itertools.product(*(values for _, values in self.grid))]


@dataclasses.dataclass
class SweepResult:
    """Each candidate's validation accuracy (mean, spread, per seed), best first."""

    rows: List[Dict[str, Any]]
    grid: Tuple[Tuple[str, Tuple[Any, ...]], ...]

    @property
    def best(self) -> Dict[str, Any]:
        """The settings of the candidate with the highest mean validation accuracy."""
        return {name: self.rows[0][name] for name, _ in self.grid}

    def to_dict(self) -> Dict[str, Any]:
        """JSON-friendly: the grid, the best settings and every row."""
        return {"grid": {name: list(values) for name, values in self.grid},
                "best": self.best, "rows": self.rows}


def sweep(config: SweepConfig, data: Any = None, *,
          log: Callable[[str], None] = print) -> SweepResult:
    """Trains every candidate with every seed on the validation copy; writes the ranking.

    Writes `recipe_sweep.csv` (one row per candidate, best first) and `recipe_sweep.json`
    (the grid, the best settings, every row) to `config.output_dir`.
    """
    config = config.validated()
    if data is None:
        data = load_data(config.base)
    held_out = data.validation_split(config.validation_fraction, seed=config.validation_seed)
    candidates = config.candidates()
    log(f"Sweep on {held_out.name}: {len(candidates)} candidates x {config.seeds} seeds, "
        f"{held_out.num_train} train / {held_out.num_test} validation examples (the test split "
        "is not used).")
    names = [name for name, _ in config.grid]
    rows = []
    for index, candidate in enumerate(candidates, 1):
        start = time.perf_counter()
        accuracies = [run_one(dataclasses.replace(candidate, seed=config.seed + s), held_out,
                              log=lambda _: None, validate=False)["accuracy"]
                      for s in range(config.seeds)]
        row = {name: getattr(candidate, name) for name in names}
        row.update(val_accuracy=float(np.mean(accuracies)),
                   val_accuracy_std=float(np.std(accuracies)),
                   val_accuracies=[float(a) for a in accuracies],
                   seconds=time.perf_counter() - start)
        rows.append(row)
        log(f"[{index}/{len(candidates)}] " + " ".join(f"{k}={row[k]}" for k in names)
            + f"  val_accuracy={row['val_accuracy']:.4f} +- {row['val_accuracy_std']:.4f}")
    rows.sort(key=lambda r: -r["val_accuracy"])
    result = SweepResult(rows=rows, grid=config.grid)
    os.makedirs(config.output_dir, exist_ok=True)
    write_csv(rows, os.path.join(config.output_dir, "recipe_sweep.csv"),
              columns=[*names, "val_accuracy", "seconds"])  # "_std" columns follow their own
    record = result.to_dict()
    record.update(base={k: v for k, v in dataclasses.asdict(config.base).items()
                        if k not in names}, seeds=config.seeds,
                  validation_fraction=config.validation_fraction,
                  validation_seed=config.validation_seed)
    write_json(record, os.path.join(config.output_dir, "recipe_sweep.json"))
    log("Best: " + ", ".join(f"{k}={v}" for k, v in result.best.items())
        + f" (val_accuracy {rows[0]['val_accuracy']:.4f})")
    return result
