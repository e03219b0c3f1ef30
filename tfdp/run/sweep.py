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
    "bands",  # banded MF's strategy width: it shapes the noise, not the budget
)
# What an arm may not set for itself: the arms of `sweep_arms` compare at one budget.
BUDGET_FIELDS: Tuple[str, ...] = ("target_epsilon", "delta", "noise_multiplier")
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


def _score(config: SweepConfig, held_out: Any, log: Callable[[str], None],
           prefix: str = "") -> List[Dict[str, Any]]:
    """Every candidate of `config` with every seed on `held_out`; rows best first."""
    candidates = config.candidates()
    names = [name for name, _ in config.grid]
    rows = []
    for index, candidate in enumerate(candidates, 1):
        start = time.perf_counter()
        runs = [run_one(dataclasses.replace(candidate, seed=config.seed + s), held_out,
                        log=lambda _: None, validate=False) for s in range(config.seeds)]
        accuracies = [run["accuracy"] for run in runs]
        row = {name: getattr(candidate, name) for name in names}
        row.update(val_accuracy=float(np.mean(accuracies)),
                   val_accuracy_std=float(np.std(accuracies)),
                   val_accuracies=[float(a) for a in accuracies],
                   epsilon=max(float(run["epsilon"]) for run in runs),
                   seconds=time.perf_counter() - start)
        rows.append(row)
        log(f"{prefix}[{index}/{len(candidates)}] " + " ".join(f"{k}={row[k]}" for k in names)
            + f"  val_accuracy={row['val_accuracy']:.4f} +- {row['val_accuracy_std']:.4f}")
    rows.sort(key=lambda r: -r["val_accuracy"])
    return rows


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
    log(f"Sweep on {held_out.name}: {len(config.candidates())} candidates x {config.seeds} "
        f"seeds, {held_out.num_train} train / {held_out.num_test} validation examples (the "
        "test split is not used).")
    names = [name for name, _ in config.grid]
    rows = _score(config, held_out, log)
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


# ----- contenders, each tuned on the validation copy, then scored once on the test split -----

@dataclasses.dataclass(frozen=True)
class Arm:
    """One contender of `sweep_arms`: a name, its own grid (its own tuning budget) and the
    fixed settings it changes on the shared base (`settings`, (RunConfig field, value)
    pairs, e.g. (("mechanism", "banded_mf"),); never the budget)."""

    name: str
    grid: Tuple[Tuple[str, Tuple[Any, ...]], ...]
    settings: Tuple[Tuple[str, Any], ...] = ()


@dataclasses.dataclass(frozen=True)
class ArmsConfig:
    """Contenders (e.g. fine-tuning modes) compared at one budget; see `sweep_arms`.

    `record_name` names the files written to `output_dir` (`<record_name>.json`, `.csv`);
    `command` is stored in the record (how to regenerate it).
    """

    arms: Tuple[Arm, ...]
    seeds: int = 3
    seed: int = 0
    validation_fraction: float = 0.2
    validation_seed: int = 0
    output_dir: str = "results"
    record_name: str = "arms"
    command: str = ""
    base: RunConfig = dataclasses.field(default_factory=_default_base)

    def sweeps(self) -> List[Tuple[str, SweepConfig]]:
        """Each arm's validated SweepConfig (its grid on the shared base and split)."""
        names = [arm.name for arm in self.arms]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"Give at least one arm, each with its own name; got {names}.")
        for arm in self.arms:
            budget = sorted(set(dict(arm.settings)) & set(BUDGET_FIELDS))
            if budget:
                raise ValueError(f"Arm {arm.name!r} sets {budget}: the arms share the base's "
                                 "budget (set it on ArmsConfig.base).")
        return [(arm.name, SweepConfig(
            grid=arm.grid, seeds=self.seeds, seed=self.seed,
            validation_fraction=self.validation_fraction, validation_seed=self.validation_seed,
            output_dir=self.output_dir,
            base=dataclasses.replace(self.base, **dict(arm.settings))).validated())
            for arm in self.arms]


def _trainable_parameters(model_name: str, data: Any) -> int:
    """How many scalars DP-SGD trains (and noises) in the named model for `data`."""
    from tfdp.models.registry import build_model  # pylint: disable=import-outside-toplevel

    model = build_model(model_name, data.input_shape, data.num_classes)
    return int(sum(int(np.prod(w.shape)) for w in model.trainable_weights))


def sweep_arms(config: ArmsConfig, data: Any = None, *,
               log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Tunes every arm on the validation copy, then scores each arm's best on the test split.

    Stage 1 is `sweep`'s, arm by arm: every setting of the arm's grid, every seed, trained
    on `validation_fraction` less of the training split and scored on the held-out part;
    the arm's setting with the best mean is chosen there, before the test split is read.
    Stage 2 trains each chosen setting on the whole training split with the same seeds and
    scores it on the test split (nothing is chosen from these figures). Writes
    `<record_name>.json` (settings, every validation row, the choices, the test rows, the
    trainable parameter counts) and `<record_name>.csv` (one row per arm and stage).
    """
    sweeps = config.sweeps()
    if data is None:
        data = load_data(config.base)
    held_out = data.validation_split(config.validation_fraction, seed=config.validation_seed)
    log(f"{len(sweeps)} arms on {held_out.name}: {held_out.num_train} train / "
        f"{held_out.num_test} validation examples, {config.seeds} seeds; then each arm's "
        "best on the test split.")
    validation, chosen = [], {}
    for name, arm in sweeps:
        rows = _score(arm, held_out, log, prefix=f"{name} ")
        validation += [{"arm": name, **row} for row in rows]
        chosen[name] = {key: rows[0][key] for key, _ in arm.grid}
    test = []
    for name, arm in sweeps:
        candidate = dataclasses.replace(arm.base, attack_types=None, model_dir=None,
                                        export_dir=None, **chosen[name])
        runs = [run_one(dataclasses.replace(candidate, seed=config.seed + s), data,
                        log=lambda _: None, validate=False) for s in range(config.seeds)]
        accuracies = [float(run["accuracy"]) for run in runs]
        test.append({"arm": name, **chosen[name],
                     "trainable_parameters": _trainable_parameters(candidate.model, data),
                     "test_accuracy": float(np.mean(accuracies)),
                     "test_accuracy_std": float(np.std(accuracies)),
                     "test_accuracies": accuracies,
                     "epsilon": max(float(run["epsilon"]) for run in runs),
                     "noise_multiplier": float(runs[0]["noise_multiplier"]),
                     "steps": int(runs[0]["steps"])})
        log(f"{name} test: " + ", ".join(f"{k}={v}" for k, v in chosen[name].items())
            + f"  test_accuracy={test[-1]['test_accuracy']:.4f} +- "
            f"{test[-1]['test_accuracy_std']:.4f}")
    record = _arms_record(config, sweeps, validation, chosen, test)
    os.makedirs(config.output_dir, exist_ok=True)
    write_json(record, os.path.join(config.output_dir, f"{config.record_name}.json"))
    settings = list(dict.fromkeys(key for _, arm in sweeps for key, _ in arm.grid))
    write_csv(_arms_table(validation, chosen, test),
              os.path.join(config.output_dir, f"{config.record_name}.csv"),
              columns=["arm", "stage", *settings, "trainable_parameters", "accuracy", "seeds"])
    return record


def _arms_record(config: ArmsConfig, sweeps: List[Tuple[str, SweepConfig]],
                 validation: List[Dict[str, Any]], chosen: Dict[str, Dict[str, Any]],
                 test: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The JSON record of `sweep_arms`."""
    best_validation = {name: max(r["val_accuracy"] for r in validation if r["arm"] == name)
                       for name, _ in sweeps}
    return dict(
        command=config.command,
        base={k: v for k, v in dataclasses.asdict(config.base).items()
              if k not in {key for _, arm in sweeps for key, _ in arm.grid}},
        seeds=config.seeds, seed=config.seed,
        validation_fraction=config.validation_fraction,
        validation_seed=config.validation_seed,
        std="population standard deviation over the seeds (numpy's default)",
        arms={name: {key: list(values) for key, values in arm.grid} for name, arm in sweeps},
        arm_settings={arm.name: dict(arm.settings) for arm in config.arms},
        validation=validation, chosen=chosen,
        best_on_validation=max(best_validation, key=best_validation.get),
        test=test)


def _arms_table(validation: List[Dict[str, Any]], chosen: Dict[str, Dict[str, Any]],
                test: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One CSV row per arm and stage: the chosen setting's validation and test accuracy."""
    table = []
    for row in test:
        name = row["arm"]
        val = next(r for r in validation if r["arm"] == name
                   and all(r[k] == v for k, v in chosen[name].items()))
        common = {"arm": name, **chosen[name], "trainable_parameters": row["trainable_parameters"],
                  "seeds": len(row["test_accuracies"])}
        table.append({**common, "stage": "validation", "accuracy": val["val_accuracy"],
                      "accuracy_std": val["val_accuracy_std"]})
        table.append({**common, "stage": "test", "accuracy": row["test_accuracy"],
                      "accuracy_std": row["test_accuracy_std"]})
    return table
