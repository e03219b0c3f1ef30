"""The comparison of the dynamic-DP paper's five methods and two others on one data set.

    config = CompareConfig(methods=("no_dp", "gaussian_regn"), sweep_epsilons=()).validated()
    result = compare(config)          # trains, attacks, writes the table, CSVs, JSON and plot

Every method x target epsilon x seed is one `RunConfig` run by `tfdp.run.train_and_evaluate`
(the membership-inference attacks and the audit run inside it, `RunConfig.attack_types`);
this module plans those runs, turns each `RunResult` into a flat row, aggregates the seeds
and hands the rows to `comparison_table` (text, CSV, JSON) and `comparison_plot` (the figure).
`METHOD_SETTINGS` (method key -> RunConfig fields) is the one table of the compared methods.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import keras
import numpy as np

import tfdp.attacks
from tfdp import mechanisms
from tfdp import models
from tfdp._validation import check_choice, check_positive, check_positive_int, check_probability
from tfdp.run.comparison_plot import plot_privacy_utility
from tfdp.run.comparison_table import (
    NOTES,
    TABLE_COLUMNS,
    cell,
    format_table,
    write_csv,
    write_json,
)
from tfdp.run.config import (
    EXAMPLE,
    NEURALDP,
    NO_DP,
    OTHER_METHODS,
    PATIENT,
    PRIVACY_UNITS,
    RESIDUAL_NOISE,
    RESIDUAL_PERTURBATION,
    RunConfig,
)
from tfdp.run.leakage import LeakageConfig, check_bounds, measure_leakage
from tfdp.run.recipe import recipe_config
from tfdp.run.result import RunResult
from tfdp.run.training import load_data, patient_data, train_and_evaluate

__all__ = ["METHOD_SETTINGS", "DEFAULT_SWEEP", "DEFAULT_ATTACKS", "CompareConfig", "is_calibrated",
           "ComparisonResult", "aggregate", "compare", "result_row", "run_one"]

_REGULAR = mechanisms.NoiseSchedule.REGULAR
_RANDOM = mechanisms.NoiseSchedule.RANDOM

# The compared methods: key (the --methods names; contract: docs/api/index.md) -> RunConfig fields.
# The paper's five (No-DP and the DP-SGD mechanisms x regular / random noise schedule), then
# two other methods (ordinary optimizers, no formal guarantee; their own models).
METHOD_SETTINGS: Dict[str, Dict[str, Any]] = {
    "no_dp": dict(mechanism=NO_DP),
    "gaussian_regn": dict(mechanism="gaussian", noise_schedule=_REGULAR),
    "gaussian_rann": dict(mechanism="gaussian", noise_schedule=_RANDOM),
    # The sound variant of the paper's idea: a noiseless coin drops the step (no update, no
    # data touched), so the guarantee composes over the noisy steps that happened.
    "gaussian_rann_drop": dict(mechanism="gaussian", noise_schedule=_RANDOM,
                               on_skip=mechanisms.OnSkip.DROP),
    "laplace_regn": dict(mechanism="laplace", noise_schedule=_REGULAR),
    "laplace_rann": dict(mechanism="laplace", noise_schedule=_RANDOM),
    "residual_perturbation": dict(mechanism=RESIDUAL_PERTURBATION),
    # NeuralDP keeps Adam at 0.01: with the recipe's plain SGD the noise it adds to the
    # privatized activations makes training diverge at the small budgets of the sweep.
    "neuraldp": dict(mechanism=NEURALDP, optimizer="adam", learning_rate=0.01),
    # Gaussian RegN with a patient as the privacy unit (user-level DP): patients are sampled
    # at the example rows' sampling rate, each patient's mean gradient is clipped once.
    "gaussian_regn_patient": dict(mechanism="gaussian", noise_schedule=_REGULAR,
                                  privacy_unit=PATIENT),
    # Gaussian DP-MF: banded correlated noise over cyclic Poisson batches (the base config's
    # --bands, default DEFAULT_BANDS). Not in the default set: ask for it with --methods.
    "gaussian_banded_mf": dict(mechanism="banded_mf", noise_schedule=_REGULAR),
}
DEFAULT_BANDS = 4
# The methods compared when none are named (the banded one is asked for by name).
DEFAULT_METHODS: Tuple[str, ...] = tuple(m for m in METHOD_SETTINGS if m != "gaussian_banded_mf")
# Mechanisms run once, not calibrated to a target epsilon (they have no epsilon to calibrate).
UNCALIBRATED: Tuple[str, ...] = (NO_DP, RESIDUAL_PERTURBATION)
DEFAULT_SWEEP: Tuple[float, ...] = (0.5, 1.0, 1.62, 2.0, 4.0, 8.0)
# The threshold attacks (on loss, on entropy) need no training: fast and deterministic.
DEFAULT_ATTACKS: Tuple[str, ...] = ("threshold", "threshold-entropy")
# Columns averaged over the seeds (with "_std" spreads); epsilons are aggregated apart.
_NUMERIC = (
    "accuracy", "precision", "recall", "f1", "noisy_steps_per_epoch", "steps_per_epoch",
    "noisy_steps_percent", "seconds_per_epoch", "attack_auc", "attack_advantage",
    "epsilon_lower_bound", "epsilon_lower_bound_library", "train_seconds",
)
# Every DP-SGD clip-norm field; a run keeps its mechanism's and clears the others.
_CLIP_ARGUMENTS = tuple(dict.fromkeys(mechanisms.get_mechanism(name).clip_argument
                                      for name in mechanisms.mechanism_names()))
OUTPUT_FILES = ("comparison.csv", "comparison.json", "sweep.csv", "privacy_utility.png",
                "lira_roc.png")


def is_calibrated(method: str) -> bool:
    """Whether the method key's noise is calibrated to each target epsilon (else run once)."""
    return METHOD_SETTINGS[method]["mechanism"] not in UNCALIBRATED


def _default_base() -> RunConfig:
    # The recipe (tfdp.run.recipe): chosen on a validation split, shared by every method.
    return recipe_config()


@dataclasses.dataclass(frozen=True)
class CompareConfig:
    """Settings of one comparison (scripts/compare.py's flags, as data).

    `base` holds the settings shared by every run (data set, model, epochs, batch,
    optimizer, clip norms, delta, sampling); the method, budget, seed and attacks of
    each run come from the fields here. Call `validated()` for the checked copy.
    """

    methods: Tuple[str, ...] = DEFAULT_METHODS
    target_epsilon: Optional[float] = 1.62
    noise_multiplier: Optional[float] = None
    sweep_epsilons: Tuple[float, ...] = DEFAULT_SWEEP
    noise_probability: float = 0.5
    on_skip: str = mechanisms.OnSkip.RELEASE
    seeds: int = 1
    seed: int = 0
    attack_types: Optional[Tuple[str, ...]] = DEFAULT_ATTACKS
    output_dir: str = "results"
    gamma: float = 0.5
    residual_noise: str = "additive"
    activation_clip_norm: float = 1.0
    # LiRA and the one-run audits of every method (at the main budget, first seed).
    leakage: LeakageConfig = dataclasses.field(default_factory=LeakageConfig)
    base: RunConfig = dataclasses.field(default_factory=_default_base)
    # The privacy unit of the DP-SGD methods (the per-patient row is always per patient).
    privacy_unit: str = EXAMPLE
    # Expected patients per batch of the per-patient runs; None: set by `compare` from the
    # data, so that patients are sampled at the rate examples are (same steps per epoch).
    patients_per_batch: Optional[int] = None

    def validated(self) -> "CompareConfig":
        """A checked copy (sequences as tuples); raises ValueError on settings that cannot run."""
        methods = tuple(self.methods)
        unknown = [m for m in methods if m not in METHOD_SETTINGS]
        if unknown or not methods:
            raise ValueError(f"Unknown methods {unknown}; choose from "
                             f"{', '.join(METHOD_SETTINGS)}.")
        if (self.target_epsilon is None) == (self.noise_multiplier is None):
            raise ValueError(
                "Give exactly one shared budget: --target_epsilon (noise calibrated per method) "
                "or --noise_multiplier (the same noise for every method)"
                + (", not both." if self.target_epsilon is not None else "."))
        if self.target_epsilon is not None:
            check_positive("target_epsilon", self.target_epsilon)
        sweep = tuple(self.sweep_epsilons)
        if self.noise_multiplier is not None:
            check_positive("noise_multiplier", self.noise_multiplier)
            if sweep:
                raise ValueError("--sweep_epsilons needs --target_epsilon; with a fixed "
                                 "--noise_multiplier pass --sweep_epsilons= (empty).")
        for eps in sweep:
            check_positive("sweep_epsilons", eps)
        p = check_probability("noise_probability", self.noise_probability)
        if not 0.0 < p < 1.0 and any(METHOD_SETTINGS[m].get("noise_schedule") == _RANDOM
                                     for m in methods):
            raise ValueError(
                f"--noise_probability must be in (0, 1) for the RanN methods, got {p}.")
        check_choice("on_skip", self.on_skip, mechanisms.values(mechanisms.OnSkip))
        check_positive_int("seeds", self.seeds)
        check_positive("gamma", self.gamma)
        check_choice("residual_noise", self.residual_noise, RESIDUAL_NOISE)
        check_positive("activation_clip_norm", self.activation_clip_norm)
        check_choice("privacy_unit", self.privacy_unit, PRIVACY_UNITS)
        if self.patients_per_batch is not None:
            check_positive_int("patients_per_batch", self.patients_per_batch)
        if self.privacy_unit == PATIENT and "gaussian_regn" in methods:
            # Every DP-SGD row is per patient: the extra row would repeat gaussian_regn.
            methods = tuple(m for m in methods if m != "gaussian_regn_patient")
        attacks = None if self.attack_types is None else tuple(self.attack_types)
        return dataclasses.replace(self, methods=methods, sweep_epsilons=sweep,
                                   attack_types=attacks or None,
                                   leakage=self.leakage.validated())

    @property
    def targets(self) -> List[Optional[float]]:
        """The target epsilons to train at: the main one, then the sweep's ([None]: fixed noise)."""
        if self.noise_multiplier is not None:
            return [None]
        return list(dict.fromkeys([self.target_epsilon, *self.sweep_epsilons]))

    @property
    def seed_list(self) -> List[int]:
        """The seeds every run is repeated with."""
        return [self.seed + i for i in range(self.seeds)]

    def plan(self) -> List[Tuple[str, RunConfig]]:
        """(method key, RunConfig) of every run, method by method (uncalibrated ones once)."""
        runs = []
        for method in self.methods:
            for target in (self.targets if is_calibrated(method) else [None]):
                for seed in self.seed_list:
                    runs.append((method, self.run_config(method, target, seed)))
        return runs

    def run_config(self, method: str, target: Optional[float], seed: int) -> RunConfig:
        """The RunConfig of one run: `method` at `target` (or the fixed noise), with `seed`."""
        fields = dict(METHOD_SETTINGS[method], seed=seed, attack_types=self.attack_types,
                      model_dir=None, export_dir=None, max_examples_per_patient=None,
                      bands=None, strategy_optimization=False)
        if fields["mechanism"] == "banded_mf":
            fields.update(bands=self.base.bands or DEFAULT_BANDS,
                          strategy_optimization=self.base.strategy_optimization)
        mechanism = fields["mechanism"]
        budget = dict(target_epsilon=target if self.noise_multiplier is None else None,
                      noise_multiplier=self.noise_multiplier)
        if mechanism in OTHER_METHODS:
            # Their own model, no gradient clipping, no noise schedule.
            fields.update(model="auto", l2_norm_clip=None, l1_norm_clip=None,
                          noise_schedule=_REGULAR, noise_probability=1.0,
                          on_skip=mechanisms.OnSkip.RELEASE)
            if mechanism == RESIDUAL_PERTURBATION:  # a fixed gamma: nothing to calibrate
                fields.update(gamma=self.gamma, residual_noise=self.residual_noise,
                              target_epsilon=None, noise_multiplier=None)
            else:  # NeuralDP: calibrated to its claimed epsilon
                fields.update(activation_clip_norm=self.activation_clip_norm, **budget)
            return dataclasses.replace(self.base, **fields)
        fields.update({clip: None for clip in _CLIP_ARGUMENTS})
        if mechanism == NO_DP:
            fields.update(target_epsilon=None, noise_multiplier=None)
            return dataclasses.replace(self.base, **fields)
        if fields.get("noise_schedule") == _RANDOM:
            fields.update(noise_probability=self.noise_probability,
                          on_skip=METHOD_SETTINGS[method].get("on_skip", self.on_skip))
        clip = mechanisms.get_mechanism(mechanism).clip_argument
        fields.update(budget, **{clip: getattr(self.base, clip) or 1.0})
        if self.privacy_unit == PATIENT:
            fields["privacy_unit"] = PATIENT
        if fields.get("privacy_unit") == PATIENT:
            fields["max_examples_per_patient"] = self.base.max_examples_per_patient
            if self.patients_per_batch is not None:
                fields["batch_size"] = self.patients_per_batch
        return dataclasses.replace(self.base, **fields)

    def with_patient_batches(self, data: Any) -> "CompareConfig":
        """A copy whose per-patient runs sample patients at the rate examples are sampled.

        patients per batch = round(batch_size x patients / examples): the same sampling
        rate, so the same steps per epoch and about the same examples per step as the
        example-level rows; only the unit (and its epsilon) differs.
        """
        if self.patients_per_batch is not None or not any(
                self.run_config(m, self.targets[0], self.seed).per_patient
                for m in self.methods if is_calibrated(m)):
            return self
        patients = patient_data(dataclasses.replace(self.base, privacy_unit=PATIENT,
                                                    mechanism="gaussian"), data,
                                log=lambda _: None).num_groups
        batch = max(1, round(self.base.batch_size * patients / data.num_train))
        return dataclasses.replace(self, patients_per_batch=min(batch, patients))


# ----- one run -----

def result_row(config: RunConfig, result: RunResult, train_seconds: float) -> Dict[str, Any]:
    """The flat row of one run: utility, epsilons, ledger counts, timing, attack results.

    `config` is the planned configuration (its target epsilon labels the row); the
    calibrated noise multiplier comes from `result.config`.
    """
    privacy, ledger = result.privacy, result.ledger
    row: Dict[str, Any] = {
        "method": result.method,
        "target_epsilon": config.target_epsilon if config.is_private else None,
        "noise_multiplier": result.config.noise_multiplier,
        "seed": config.seed,
        **{k: result.utility.get(k) for k in ("accuracy", "precision", "recall", "f1")},
        "epsilon": float(privacy.epsilon),
        "epsilon_noisy_steps_only": float(privacy.epsilon_noisy_steps_only),
        # Only NeuralDP's record has one (the preprint's figure; not a guarantee).
        "epsilon_claimed": getattr(privacy, "epsilon_claimed", None),
        "statement": privacy.statement,
        "privacy_unit": getattr(privacy, "privacy_unit", "example"),
        # "reproducible" only for a run that opted in to insecure_reproducible_seed.
        "randomness": ("secret" if config.insecure_reproducible_seed is None
                       else "reproducible (insecure)"),
        "steps": ledger["steps"],
        "noisy_steps": ledger["noisy_steps"],
        "dropped_steps": ledger["dropped_steps"],
        "seconds_per_epoch": result.seconds_per_epoch,
        "train_seconds": train_seconds,
    }
    epochs = max(len(result.history), 1)
    row["steps_per_epoch"] = row["steps"] / epochs
    row["noisy_steps_per_epoch"] = row["noisy_steps"] / epochs
    row["noisy_steps_percent"] = 100.0 * row["noisy_steps"] / max(row["steps"], 1)
    if config.mechanism in OTHER_METHODS:
        # Their noise is in the activations, not in a DP optimizer's steps: no such count.
        row["noisy_steps_per_epoch"] = row["noisy_steps_percent"] = None
    report, verdict = result.attack_report, result.audit
    if report is None:
        row.update(attack_auc=None, attack_advantage=None, epsilon_lower_bound=None)
        return row
    # The audit's bound is delta-aware and holds jointly over all thresholds (95%);
    # the library's own bound is optimistic (per threshold, delta = 0): kept for reference.
    row.update(attack_auc=float(report.auc), attack_advantage=float(report.advantage),
               best_attack=report.best_attack,
               epsilon_lower_bound=float(verdict.empirical_epsilon_lower_bound),
               epsilon_lower_bound_library=float(report.epsilon_lower_bound),
               audit_consistent=bool(verdict.consistent), audit=verdict.message)
    return row


def run_one(config: RunConfig, data: Any = None, *,
            log: Callable[[str], None] = print, validate: bool = True) -> Dict[str, Any]:
    """Trains (and attacks, per `config.attack_types`) one configuration; returns its row.

    `validate=False` skips the per-epoch test metrics, which only the epoch lines show.
    """
    # Each run builds a fresh model: drop the previous runs' graphs and layer names (without
    # a full garbage collection per run, about a second each).
    keras.backend.clear_session(free_memory=False)
    start = time.perf_counter()
    result = train_and_evaluate(config, data, log=log, validate=validate)
    return result_row(config, result, time.perf_counter() - start)


# ----- aggregation over seeds -----

def aggregate(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    """One row from the seeds' rows: means (and "_std" spreads) of the numeric columns.

    An infinite epsilon in any seed makes the aggregate infinite; the largest finite
    epsilon is kept otherwise (never an average that could understate one run).
    """
    out = {k: rows[0].get(k) for k in ("method", "target_epsilon", "noise_multiplier",
                                          "statement", "privacy_unit", "randomness")}
    out["seeds"] = len(rows)
    if any(r.get("audit_consistent") is not None for r in rows):
        out["audit_consistent"] = all(r.get("audit_consistent", True) for r in rows)
    for key in ("epsilon", "epsilon_noisy_steps_only"):
        out[key] = max(float(r[key]) for r in rows)
    claims = [float(r["epsilon_claimed"]) for r in rows if r.get("epsilon_claimed") is not None]
    out["epsilon_claimed"] = max(claims) if claims else None
    for key in _NUMERIC:
        values = [r[key] for r in rows if r.get(key) is not None]
        if not values:
            out[key] = None
            continue
        out[key] = float(np.mean(values))
        if len(rows) > 1:
            out[f"{key}_std"] = float(np.std(values, ddof=1))
    return out


def _group(config: CompareConfig, runs: List[Dict[str, Any]],
           target: Optional[float]) -> List[Dict[str, Any]]:
    """The aggregated row of every method at `target` (uncalibrated methods: their one setting)."""
    rows = []
    for method in config.methods:
        want = target if is_calibrated(method) else None
        selected = [r for r in runs if r["method_key"] == method and r["target_epsilon"] == want]
        if selected:
            rows.append(aggregate(selected))
    return rows


# ----- the comparison -----

@dataclasses.dataclass
class ComparisonResult:
    """What `compare` produced (and wrote to `files`).

    Attributes:
      config: the validated CompareConfig.
      dataset: the data set's `summary()`.
      budget: "target epsilon X" or "noise multiplier X", the shared budget of `table`.
      notes: how to read the table's columns (`comparison_table.NOTES`).
      table: one aggregated row per method at the shared budget (comparison.csv).
      sweep: one aggregated row per calibrated method and swept target (sweep.csv).
      runs: one row per training run (every method x target x seed).
      files: output name -> path of every file written.
    """

    config: CompareConfig
    dataset: Dict[str, Any]
    budget: str
    notes: str
    table: List[Dict[str, Any]]
    sweep: List[Dict[str, Any]]
    runs: List[Dict[str, Any]]
    files: Dict[str, str]

    def to_dict(self) -> Dict[str, Any]:
        """The comparison.json record (before `jsonable`): settings, tables, runs, files."""
        return {
            "settings": dataclasses.asdict(self.config),
            "dataset": self.dataset,
            "budget": self.budget,
            "notes": self.notes,
            "table": self.table,
            "sweep": self.sweep,
            "runs": self.runs,
            "files": self.files,
        }


def _progress(i: int, total: int, run_config: RunConfig, row: Mapping[str, Any]) -> str:
    """The progress line of run `i` of `total`."""
    label = run_config.method_name()
    if run_config.target_epsilon is not None:
        label += f", target eps {run_config.target_epsilon:g}"
    label += f", seed {run_config.seed}"
    attack = "" if row["attack_auc"] is None else f", attack AUC {row['attack_auc']:.3f}"
    if row.get("epsilon_claimed") is not None:
        attack = f", claimed eps {cell(row['epsilon_claimed'], 2)} (not a guarantee)" + attack
    return (f"[{i}/{total}] {label}: accuracy {row['accuracy']:.3f}, "
            f"eps {cell(row['epsilon'], 2)} (noisy steps only "
            f"{cell(row['epsilon_noisy_steps_only'], 2)}), "
            f"noise {cell(row['noise_multiplier'], 3)}{attack}, {row['train_seconds']:.1f}s")


def _plot_title(config: CompareConfig, data: Any) -> str:
    """The figure's title: data, model, epochs, delta and the methods' own settings."""
    base = config.base
    model_name = (models.default_model_name(data.input_shape) if base.model == "auto"
                  else base.model)
    return (f"{data.name}, model {model_name}, {base.epochs} epochs, delta {base.delta:g}; "
            f"RanN noise probability {config.noise_probability:g} (on_skip={config.on_skip})"
            + (f"; residual perturbation (own ResNet) gamma {config.gamma:g}"
               if RESIDUAL_PERTURBATION in config.methods else "")
            + ("; NeuralDP (own model)" if NEURALDP in config.methods else ""))


def _measure_leakage(config: CompareConfig, data: Any, log: Callable[[str], None],
                     progress: Optional[Callable[[str], None]] = None,
                     ) -> Tuple[Dict[str, Dict[str, Any]], Dict[str, Tuple[Any, Any]]]:
    """LiRA and the audits of every method at the main budget and first seed.

    Returns (method name -> leakage columns, method name -> LiRA (fpr, tpr) curve).
    """
    if not config.leakage.active:
        return {}, {}
    log(f"Leakage: LiRA with {config.leakage.lira_shadows} shadow models and one-run audits "
        f"with {config.leakage.audit_canaries} canaries, per method (seed {config.seed}).")
    columns, curves = {}, {}
    for method in config.methods:
        run_config = config.run_config(
            method, config.targets[0] if is_calibrated(method) else None, config.seed)
        start = time.perf_counter()
        row, report = measure_leakage(run_config, data, config.leakage, log=log,
                                      progress=progress)
        row["leakage_seconds"] = time.perf_counter() - start
        name = run_config.method_name()
        columns[name] = row
        if report is not None:
            curves[name] = (report.fpr_curve, report.tpr_curve)
    return columns, curves


def compare(config: CompareConfig, data: Any = None, *, log: Callable[[str], None] = print,
            verbose: bool = False) -> ComparisonResult:
    """Runs every method x target x seed, writes the outputs to `config.output_dir`.

    Args:
      config: the comparison's settings (checked here with `validated()`).
      data: an already loaded `tfdp.data.Dataset` (otherwise loaded from `config.base`).
      log: where the progress lines, the table and the notes go.
      verbose: also log every run's own lines (calibration, epochs, test metrics).

    Returns the ComparisonResult; comparison.csv, comparison.json, privacy_utility.png
    and (with a sweep) sweep.csv are written to `config.output_dir`.
    """
    config = config.validated()
    base = config.base
    if data is None:
        data = load_data(base)
    config = config.with_patient_batches(data)
    plan = config.plan()
    log(f"Comparing {len(config.methods)} methods on {data.name} ({data.num_train} train / "
        f"{data.num_test} test), {len(plan)} training runs of {base.epochs} epochs "
        f"(batch {base.batch_size}, {base.optimizer} lr {base.learning_rate}, delta {base.delta}).")
    quiet = log if verbose else (lambda *_: None)
    runs: List[Dict[str, Any]] = []
    for i, (method, run_config) in enumerate(plan, 1):
        row = run_one(run_config, data, log=quiet, validate=verbose)
        row["method_key"] = method
        runs.append(row)
        log(_progress(i, len(plan), run_config, row))

    leakage, curves = _measure_leakage(config, data, log, progress=log if verbose else None)
    table = _group(config, runs, config.target_epsilon)
    for row in table:
        row.update(leakage.get(row["method"], {}))
        for message in check_bounds(row):
            log(message)
            row.setdefault("leakage_warnings", []).append(message)
    sweep = [r for target in config.sweep_epsilons for r in _group(config, runs, target)
             if r["target_epsilon"] is not None]
    os.makedirs(config.output_dir, exist_ok=True)
    files = {name: os.path.join(config.output_dir, name) for name in OUTPUT_FILES}
    write_csv(table, files["comparison.csv"], TABLE_COLUMNS)
    if sweep:
        write_csv(sweep, files["sweep.csv"], TABLE_COLUMNS)
    else:
        files.pop("sweep.csv")
    plot_privacy_utility(sweep, table, files["privacy_utility.png"], _plot_title(config, data))
    if curves:
        tfdp.attacks.plot_log_roc(curves, files["lira_roc.png"],
                                  title=f"LiRA on {data.name} ({config.leakage.lira_shadows} "
                                        "shadow models per target)")
    else:
        files.pop("lira_roc.png")
    budget = (f"target epsilon {config.target_epsilon:g}" if config.noise_multiplier is None
              else f"noise multiplier {config.noise_multiplier:g}")
    result = ComparisonResult(config=config, dataset=data.summary(), budget=budget, notes=NOTES,
                              table=table, sweep=sweep, runs=runs, files=files)
    write_json(result.to_dict(), files["comparison.json"])
    seeds = config.seeds
    log("")
    log(f"Comparison at {budget} ({data.name}, {seeds} seed{'s' if seeds > 1 else ''}):")
    log(format_table(table))
    log("")
    log(NOTES)
    log("Wrote " + ", ".join(files.values()))
    return result
