"""Compare the dynamic-DP paper's five methods and two others side by side on one data set.

    .venv/bin/python scripts/compare.py                      # bundled digits, a few minutes

Trains No-DP, Gaussian RegN-DP-SGD, Gaussian RanN-DP-SGD, Laplace RegN-DP-SGD and
Laplace RanN-DP-SGD on the same data, model, seeds and hyperparameters, plus
residual perturbation (a ResNet with noise of scale `--gamma` on every residual
branch; not calibrated to a budget) and NeuralDP (its own model with one privatized
layer; calibrated to the withdrawn preprint's claimed epsilon), at a shared
privacy budget (`--target_epsilon`: each private method's noise is calibrated to
reach it), attacks each trained model with membership inference, and sweeps the
budget (`--sweep_epsilons`) to draw privacy-utility curves. Writes to `--output_dir`:

    comparison.csv / comparison.json   the table at --target_epsilon (json: also every run)
    sweep.csv                          one row per method and swept target epsilon
    privacy_utility.png                accuracy and attack AUC against epsilon

Epsilon columns: `epsilon` is the formal (epsilon, delta)-DP guarantee, "inf" where
there is none (No-DP; the random schedule releasing noiseless steps).
`epsilon_noisy_steps_only` is the paper's convention for the random schedule
(composition over the noisy steps only): NOT a guarantee when noiseless steps are
released. `epsilon_claimed` is NeuralDP's figure as its withdrawn preprint argues:
NOT a guarantee (residual perturbation and NeuralDP have epsilon = inf).
`epsilon_lower_bound` is what the attacks prove empirically.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_SCRIPTS = os.path.dirname(os.path.abspath(__file__))
for _path in (os.path.dirname(_SCRIPTS), _SCRIPTS):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import _cli  # noqa: E402 (scripts/ is sys.path[0] when a script runs)

_cli.quiet_tensorflow_startup()

import numpy as np  # noqa: E402
import keras
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402
from absl import logging as absl_logging  # noqa: E402

import models  # noqa: E402
import tfdp  # noqa: E402
import tfdp.attacks  # noqa: E402
import train  # noqa: E402  (scripts/train.py: TrainConfig, train_and_evaluate)

# The paper's five methods: key -> TrainConfig fields.
METHODS: Dict[str, Dict[str, Any]] = {
    "no_dp": dict(mechanism="none"),
    "gaussian_regn": dict(mechanism="gaussian", noise_schedule="regular"),
    "gaussian_rann": dict(mechanism="gaussian", noise_schedule="random"),
    "laplace_regn": dict(mechanism="laplace", noise_schedule="regular"),
    "laplace_rann": dict(mechanism="laplace", noise_schedule="random"),
    # Two other methods (ordinary optimizers, no formal guarantee; their own models).
    "residual_perturbation": dict(mechanism="residual_perturbation"),
    "neuraldp": dict(mechanism="neuraldp"),
}
# Methods run once, not calibrated to a target epsilon (they have no epsilon to calibrate).
UNCALIBRATED = ("none", "residual_perturbation")
DEFAULT_SWEEP = (0.5, 1.0, 1.62, 2.0, 4.0, 8.0)
# The threshold attacks (on loss, on entropy) need no training: fast and deterministic.
DEFAULT_ATTACKS = ("threshold", "threshold-entropy")

# Columns of comparison.csv, in order (with "_std" companions when --seeds > 1).
TABLE_COLUMNS = (
    "method", "target_epsilon", "noise_multiplier", "accuracy", "precision", "recall", "f1",
    "epsilon", "epsilon_noisy_steps_only", "epsilon_claimed", "noisy_steps_per_epoch",
    "steps_per_epoch",
    "noisy_steps_percent", "seconds_per_epoch", "attack_auc", "attack_advantage",
    "epsilon_lower_bound", "audit_consistent", "train_seconds", "seeds",
)
_NUMERIC = (
    "accuracy", "precision", "recall", "f1", "noisy_steps_per_epoch", "steps_per_epoch",
    "noisy_steps_percent", "seconds_per_epoch", "attack_auc", "attack_advantage",
    "epsilon_lower_bound", "epsilon_lower_bound_library", "train_seconds",
)


@dataclasses.dataclass
class CompareConfig:
    """Settings of one comparison (the flags of this script, as data)."""

    methods: Sequence[str] = tuple(METHODS)
    target_epsilon: Optional[float] = 1.62
    noise_multiplier: Optional[float] = None
    sweep_epsilons: Sequence[float] = DEFAULT_SWEEP
    noise_probability: float = 0.5
    on_skip: str = "release"
    seeds: int = 1
    seed: int = 0
    attack_types: Optional[Sequence[str]] = DEFAULT_ATTACKS
    output_dir: str = "results"
    gamma: float = 0.5
    residual_noise: str = "additive"
    activation_clip_norm: float = 1.0
    base: train.TrainConfig = dataclasses.field(default_factory=lambda: train.TrainConfig(
        epochs=15, batch_size=64, learning_rate=0.01, optimizer="adam"))

    def check(self) -> None:
        """Raises ValueError on settings that cannot run."""
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"Unknown methods {unknown}; choose from {', '.join(METHODS)}.")
        if (self.target_epsilon is None) == (self.noise_multiplier is None):
            raise ValueError(
                "Give exactly one shared budget: --target_epsilon (noise calibrated per method) "
                "or --noise_multiplier (the same noise for every method)"
                + (", not both." if self.target_epsilon is not None else "."))
        if self.target_epsilon is not None:
            train.check_positive("target_epsilon", self.target_epsilon)
        if self.noise_multiplier is not None:
            train.check_positive("noise_multiplier", self.noise_multiplier)
            if self.sweep_epsilons:
                raise ValueError("--sweep_epsilons needs --target_epsilon; with a fixed "
                                 "--noise_multiplier pass --sweep_epsilons= (empty).")
        for eps in self.sweep_epsilons:
            train.check_positive("sweep_epsilons", eps)
        p = train.check_probability("noise_probability", self.noise_probability)
        if not 0.0 < p < 1.0 and any(METHODS[m].get("noise_schedule") == "random"
                                     for m in self.methods):
            raise ValueError(f"--noise_probability must be in (0, 1) for the RanN methods, got {p}.")
        train.check_positive_int("seeds", self.seeds)
        train.check_positive("gamma", self.gamma)
        train.check_choice("residual_noise", self.residual_noise, train.RESIDUAL_NOISE)
        train.check_positive("activation_clip_norm", self.activation_clip_norm)

    def run_config(self, method: str, target: Optional[float], seed: int) -> train.TrainConfig:
        """The TrainConfig of one run."""
        fields = dict(METHODS[method], seed=seed)
        private = fields["mechanism"] != "none"
        if fields["mechanism"] in train.OTHER_METHODS:
            return self._other_method_config(fields, target)
        if fields.get("noise_schedule") == "random":
            fields.update(noise_probability=self.noise_probability, on_skip=self.on_skip)
        if private:
            fields.update(target_epsilon=target if self.noise_multiplier is None else None,
                          noise_multiplier=self.noise_multiplier)
            if fields["mechanism"] == "gaussian":
                fields.update(l1_norm_clip=None,
                              l2_norm_clip=self.base.l2_norm_clip or 1.0)
            else:
                fields.update(l2_norm_clip=None,
                              l1_norm_clip=self.base.l1_norm_clip or 1.0)
        else:
            fields.update(target_epsilon=None, noise_multiplier=None, l2_norm_clip=None,
                          l1_norm_clip=None)
        return dataclasses.replace(self.base, model_dir=None, export_dir=None, **fields)

    def _other_method_config(self, fields: Dict[str, Any],
                             target: Optional[float]) -> train.TrainConfig:
        """Residual perturbation (fixed gamma) or NeuralDP (calibrated claim), own model."""
        fields.update(model="auto", l2_norm_clip=None, l1_norm_clip=None, noise_schedule="regular",
                      noise_probability=1.0, on_skip="release")
        if fields["mechanism"] == "residual_perturbation":
            fields.update(gamma=self.gamma, residual_noise=self.residual_noise,
                          target_epsilon=None, noise_multiplier=None)
        else:
            fields.update(activation_clip_norm=self.activation_clip_norm,
                          target_epsilon=target if self.noise_multiplier is None else None,
                          noise_multiplier=self.noise_multiplier)
        return dataclasses.replace(self.base, model_dir=None, export_dir=None, **fields)


# ----- one run -----

def run_one(config: train.TrainConfig, data, attack_types, log) -> Dict[str, Any]:
    """Trains one configuration, attacks it and returns a flat row of results."""
    keras.backend.clear_session()
    start = time.perf_counter()
    record = train.train_and_evaluate(config, data, log=log)
    train_seconds = time.perf_counter() - start
    model = record.pop("model")
    row: Dict[str, Any] = {
        "method": record["method"],
        "target_epsilon": config.target_epsilon if config.is_private else None,
        "noise_multiplier": record["config"]["noise_multiplier"],
        "seed": config.seed,
        **{k: record["utility"].get(k) for k in ("accuracy", "precision", "recall", "f1")},
        "epsilon": float(record["privacy"]["epsilon"]),
        "epsilon_noisy_steps_only": float(record["privacy"]["epsilon_noisy_steps_only"]),
        "epsilon_claimed": record["privacy"].get("epsilon_claimed"),
        "statement": record["privacy"]["statement"],
        "steps": record["ledger"]["steps"],
        "noisy_steps": record["ledger"]["noisy_steps"],
        "dropped_steps": record["ledger"]["dropped_steps"],
        "seconds_per_epoch": record["seconds_per_epoch"],
        "train_seconds": train_seconds,
    }
    epochs = max(len(record["history"]), 1)
    row["steps_per_epoch"] = row["steps"] / epochs
    row["noisy_steps_per_epoch"] = row["noisy_steps"] / epochs
    row["noisy_steps_percent"] = 100.0 * row["noisy_steps"] / max(row["steps"], 1)
    if config.mechanism in train.OTHER_METHODS:
        # Their noise is in the activations, not in a DP optimizer's steps: no such count.
        row["noisy_steps_per_epoch"] = row["noisy_steps_percent"] = None
    if attack_types:
        report = tfdp.attacks.membership_inference(
            model, (data.x_train, data.y_train), (data.x_test, data.y_test),
            attack_types=list(attack_types), slicing=None, seed=config.seed)
        # The audit's bound is delta-aware and holds jointly over all thresholds (95%);
        # the library's own bound is optimistic (per threshold, delta = 0): kept for reference.
        verdict = tfdp.attacks.audit(report, record["privacy"])
        row.update(attack_auc=float(report.auc), attack_advantage=float(report.advantage),
                   best_attack=report.best_attack,
                   epsilon_lower_bound=float(verdict.empirical_epsilon_lower_bound),
                   epsilon_lower_bound_library=float(report.epsilon_lower_bound),
                   audit_consistent=bool(verdict.consistent), audit=verdict.message)
    else:
        row.update(attack_auc=None, attack_advantage=None, epsilon_lower_bound=None)
    return row


# ----- aggregation over seeds -----

def aggregate(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    """One row from the seeds' rows: means (and "_std" spreads) of the numeric columns.

    An infinite epsilon in any seed makes the aggregate infinite; the largest finite
    epsilon is kept otherwise (never an average that could understate one run).
    """
    out = {k: rows[0].get(k) for k in ("method", "target_epsilon", "noise_multiplier",
                                          "statement")}
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


# ----- output -----

def _cell(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf"
        if math.isnan(value):
            return "nan"
        return f"{value:.{digits}f}"
    return str(value)


def format_table(rows: List[Dict[str, Any]]) -> str:
    """The main table as aligned text."""
    header = ["method", "acc", "prec", "recall", "f1", "eps", "eps_noisy", "eps_claim", "noise/ep",
              "noise%", "s/epoch", "MIA_AUC", "MIA_adv", "eps_LB"]
    lines = []
    for r in rows:
        def pm(key, digits=3):
            text = _cell(r.get(key), digits)
            if r.get(f"{key}_std") is not None:
                text += f"±{r[f'{key}_std']:.{digits}f}"
            return text
        lines.append([
            r["method"], pm("accuracy"), pm("precision"), pm("recall"), pm("f1"),
            _cell(r["epsilon"], 2), _cell(r["epsilon_noisy_steps_only"], 2),
            _cell(r.get("epsilon_claimed"), 2),
            pm("noisy_steps_per_epoch", 1), pm("noisy_steps_percent", 0), pm("seconds_per_epoch", 2),
            pm("attack_auc"), pm("attack_advantage"), pm("epsilon_lower_bound", 2),
        ])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*header), fmt.format(*("-" * w for w in widths))]
                     + [fmt.format(*line) for line in lines])


NOTES = (
    "eps: formal (epsilon, delta)-DP guarantee of the training run; inf = no formal guarantee "
    "(No-DP, or the random schedule releasing exact clipped gradients on noiseless steps). "
    "eps_noisy: epsilon composed over the noisy steps only, the dynamic-DP paper's convention; "
    "for RanN methods with on_skip=release it is NOT a guarantee. "
    "Residual perturbation and NeuralDP train with ordinary optimizers: eps = inf. "
    "eps_claim: NeuralDP's epsilon as its withdrawn preprint argues; NOT a guarantee (it does "
    "not cover the layers before the privatized one or the labels). "
    "eps_LB: empirical lower bound on epsilon from the membership-inference attacks "
    "(delta-aware, 95% joint confidence; an eps_LB above a finite eps would be a violation). "
    "noise/ep and noise%: steps with noise per epoch and their share of all steps."
)


def write_csv(rows: List[Dict[str, Any]], path: str, columns: Sequence[str]) -> None:
    """Writes `rows` with `columns` first (and their "_std" companions when present)."""
    extra = [f"{c}_std" for c in columns if any(f"{c}_std" in r for r in rows)]
    cols = list(columns) + extra
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({c: ("inf" if isinstance(r.get(c), float) and math.isinf(r[c])
                                 else r.get(c)) for c in cols})


def plot_privacy_utility(sweep: List[Dict[str, Any]], table: List[Dict[str, Any]], path: str,
                         title: str) -> None:
    """Draws `privacy_utility_figure` to a PNG at `path`."""
    import matplotlib.pyplot as plt

    fig = privacy_utility_figure(sweep, table, title)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def privacy_utility_figure(sweep: List[Dict[str, Any]], table: List[Dict[str, Any]], title: str):
    """Accuracy vs formal epsilon, accuracy vs noisy-steps epsilon, attack AUC vs epsilon.

    Infinite epsilons are drawn in a separate column at the right, labelled "no formal
    guarantee", never at a finite position. Returns the matplotlib Figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sweep or [r for r in table if r["target_epsilon"] is not None]
    no_dp = [r for r in table if r["target_epsilon"] is None]
    finite = [r[k] for r in rows for k in ("epsilon", "epsilon_noisy_steps_only")
              if r.get(k) is not None and math.isfinite(r[k]) and r[k] > 0]
    lo = min(finite) if finite else 0.1
    hi = max(finite) if finite else 10.0
    inf_x = hi * 3.5  # the "no formal guarantee" column, right of every finite epsilon
    methods = list(dict.fromkeys(r["method"] for r in rows))
    colors = {m: c for m, c in zip(methods, ["tab:blue", "tab:orange", "tab:green", "tab:red",
                                             "tab:purple", "tab:brown", "tab:pink"])}
    markers = {m: mk for m, mk in zip(methods, ["o", "s", "^", "D", "v", "P", "X"])}

    panels = [
        ("epsilon", "accuracy", "Accuracy vs formal epsilon (guarantee)", "test accuracy"),
        ("epsilon_noisy_steps_only", "accuracy",
         "Accuracy vs epsilon over noisy steps only\n(paper's convention; not a guarantee for RanN)",
         "test accuracy"),
        ("epsilon_noisy_steps_only", "attack_auc",
         "Membership-inference AUC vs epsilon over noisy steps", "attack AUC (0.5 = guessing)"),
    ]
    if not any(r.get("attack_auc") is not None for r in rows + no_dp):
        panels = panels[:2]
    # A 2x2 grid: the panels, and the last cell for the legend and how to read the plot.
    fig, grid = plt.subplots(2, 2, figsize=(13, 10))
    axes = list(grid.ravel()[:len(panels)])
    key_axis = grid.ravel()[-1]
    for unused in grid.ravel()[len(panels):-1]:
        unused.axis("off")
    for ax, (xkey, ykey, panel_title, ylabel) in zip(axes, panels):
        for method in methods:
            points = sorted(
                ((r[xkey], r[ykey]) for r in rows if r["method"] == method
                 and r.get(ykey) is not None), key=lambda p: p[0])
            xs_fin = [(x, y) for x, y in points if math.isfinite(x)]
            xs_inf = [y for x, y in points if not math.isfinite(x)]
            if xs_fin:
                ax.plot(*zip(*xs_fin), marker=markers[method], color=colors[method],
                        label=method)
            if xs_inf:
                # Every target of this method lands in the infinity column: one marker per run,
                # slightly offset per method so overlapping methods stay visible.
                offset = 1.0 + 0.06 * (methods.index(method) - len(methods) / 2)
                ax.scatter([inf_x * offset] * len(xs_inf), xs_inf, marker=markers[method],
                           color=colors[method], facecolors="none")
        for r in no_dp:
            if r.get(ykey) is None:
                continue
            # A horizontal reference line spanning the panel (not a point at any epsilon).
            color = _reference_color(r, no_dp)
            ax.axhline(r[ykey], color=color, linestyle=":", linewidth=1, gid="reference")
            ax.scatter([inf_x], [r[ykey]], marker="*", s=140, color=color)
        if ykey == "attack_auc":
            ax.axhline(0.5, color="grey", linewidth=0.8, gid="reference")
        ax.set_xscale("log")
        ax.set_xlim(lo / 1.6, inf_x * 1.6)
        ax.axvline(math.sqrt(hi * inf_x), color="grey", linestyle="--", linewidth=1)
        ticks = [t for t in (0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)
                 if lo / 1.6 <= t <= hi * 1.3]
        ax.set_xticks(ticks + [inf_x])
        ax.set_xticklabels([f"{t:g}" for t in ticks] + ["inf\n(no formal\nguarantee)"])
        ax.minorticks_off()
        ax.set_xlabel("epsilon (delta fixed)")
        ax.set_ylabel(ylabel)
        ax.set_title(panel_title, fontsize=10)
        ax.grid(True, alpha=0.3)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colors[m], marker=markers[m], label=m) for m in methods]
    for r in no_dp:
        handles.append(Line2D([], [], color=_reference_color(r, no_dp), marker="*",
                              markersize=12, linestyle=":",
                              label=f"{r['method']} (eps = inf; dotted: its level)"))
    if any(not math.isfinite(r["epsilon"]) for r in rows):
        handles.append(Line2D([], [], color="grey", marker="o", markerfacecolor="none",
                              linestyle="none", label="hollow marker: a run with eps = inf"))
    labels = [h.get_label() for h in handles]
    key_axis.axis("off")
    key_axis.legend(handles, labels, loc="upper left", frameon=False, fontsize=10)
    key_axis.text(
        0.0, 0.42,
        "How to read it\n"
        "- Formal epsilon: the (epsilon, delta)-DP guarantee of the run.\n"
        "- The column right of the dashed line holds runs with NO formal\n"
        "  guarantee (epsilon = inf): No-DP, RanN runs that released\n"
        "  exact clipped gradients on their noiseless steps, residual\n"
        "  perturbation and NeuralDP (its claimed epsilon is not a guarantee).\n"
        "- Epsilon over noisy steps only: the dynamic-DP paper's figure for\n"
        "  RanN; it ignores the noiseless steps, so it is not a guarantee.\n"
        "- Attack AUC 0.5 means the membership attack does no better than\n"
        "  guessing; the dotted line is No-DP.",
        transform=key_axis.transAxes, va="top", fontsize=9.5, family="monospace")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return fig


def _reference_color(row: Dict[str, Any], references: List[Dict[str, Any]]) -> str:
    """Black for No-DP; other uncalibrated methods (residual perturbation) get their own colour."""
    if row["method"] == "No-DP":
        return "black"
    others = [r["method"] for r in references if r["method"] != "No-DP"]
    return ("tab:olive", "tab:cyan", "tab:gray")[others.index(row["method"]) % 3]


# ----- the comparison -----

def compare(config: CompareConfig, *, log=print, verbose: bool = False) -> Dict[str, Any]:
    """Runs every method x target x seed, writes the outputs and returns them."""
    config.check()
    base = config.base
    data = train.load_data(base)
    targets: List[Optional[float]]
    if config.noise_multiplier is not None:
        targets = [None]
    else:
        targets = list(dict.fromkeys([config.target_epsilon, *config.sweep_epsilons]))
    seeds = [config.seed + i for i in range(config.seeds)]
    plan = []
    for method in config.methods:
        method_targets = [None] if METHODS[method]["mechanism"] in UNCALIBRATED else targets
        for target in method_targets:
            for seed in seeds:
                plan.append((method, config.run_config(method, target, seed)))
    log(f"Comparing {len(config.methods)} methods on {data.name} ({data.num_train} train / "
        f"{data.num_test} test), {len(plan)} training runs of {base.epochs} epochs "
        f"(batch {base.batch_size}, {base.optimizer} lr {base.learning_rate}, delta {base.delta}).")
    quiet = log if verbose else (lambda *_: None)
    runs: List[Dict[str, Any]] = []
    for i, (method, run_config) in enumerate(plan, 1):
        label = run_config.method_name()
        if run_config.target_epsilon is not None:
            label += f", target eps {run_config.target_epsilon:g}"
        label += f", seed {run_config.seed}"
        row = run_one(run_config, data, config.attack_types, quiet)
        row["method_key"] = method
        runs.append(row)
        attack = ("" if row["attack_auc"] is None
                  else f", attack AUC {row['attack_auc']:.3f}")
        if row.get("epsilon_claimed") is not None:
            attack = f", claimed eps {_cell(row['epsilon_claimed'], 2)} (not a guarantee)" + attack
        log(f"[{i}/{len(plan)}] {label}: accuracy {row['accuracy']:.3f}, "
            f"eps {_cell(row['epsilon'], 2)} (noisy steps only {_cell(row['epsilon_noisy_steps_only'], 2)}), "
            f"noise {_cell(row['noise_multiplier'], 3)}{attack}, {row['train_seconds']:.1f}s")

    def group(target):
        rows = []
        for method in config.methods:
            calibrated = METHODS[method]["mechanism"] not in UNCALIBRATED
            want = target if calibrated else None
            selected = [r for r in runs
                        if r["method_key"] == method and r["target_epsilon"] == want]
            if selected:
                rows.append(aggregate(selected))
        return rows

    table = group(config.target_epsilon)
    sweep = []
    for target in config.sweep_epsilons:
        sweep += [r for r in group(target) if r["target_epsilon"] is not None]

    os.makedirs(config.output_dir, exist_ok=True)
    paths = {name: os.path.join(config.output_dir, name) for name in
             ("comparison.csv", "comparison.json", "sweep.csv", "privacy_utility.png")}
    write_csv(table, paths["comparison.csv"], TABLE_COLUMNS)
    if sweep:
        write_csv(sweep, paths["sweep.csv"], TABLE_COLUMNS)
    else:
        paths.pop("sweep.csv")
    budget = (f"target epsilon {config.target_epsilon:g}" if config.noise_multiplier is None
              else f"noise multiplier {config.noise_multiplier:g}")
    model_name = (models.default_model_name(data.input_shape) if base.model == "auto"
                  else base.model)
    title = (f"{data.name}, model {model_name}, {base.epochs} epochs, delta {base.delta:g}; "
             f"RanN noise probability {config.noise_probability:g} (on_skip={config.on_skip})"
             + (f"; residual perturbation (own ResNet) gamma {config.gamma:g}"
                if "residual_perturbation" in config.methods else "")
             + ("; NeuralDP (own model)" if "neuraldp" in config.methods else ""))
    plot_privacy_utility(sweep, table, paths["privacy_utility.png"], title)
    settings = dataclasses.asdict(config)
    settings["base"] = dataclasses.asdict(base)
    result = {
        "settings": settings,
        "dataset": data.summary(),
        "budget": budget,
        "notes": NOTES,
        "table": table,
        "sweep": sweep,
        "runs": runs,
        "files": paths,
    }
    with open(paths["comparison.json"], "w") as f:
        json.dump(train.to_json(result), f, indent=2)
    log("")
    log(f"Comparison at {budget} ({data.name}, {len(seeds)} seed{'s' if len(seeds) > 1 else ''}):")
    log(format_table(table))
    log("")
    log(NOTES)
    log("Wrote " + ", ".join(paths.values()))
    return result


# ----- flags -----

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines this script's absl flags."""
    flags.DEFINE_list("methods", list(METHODS), "Methods to compare: " + ", ".join(METHODS))
    flags.DEFINE_float("target_epsilon", 1.62, "Shared budget of the main table: each private "
                       "method's noise is calibrated to reach it (RanN: over its expected "
                       "noisy steps).")
    flags.DEFINE_float("noise_multiplier", None, "Instead of --target_epsilon: the same noise "
                       "multiplier for every private method (disables the sweep).")
    flags.DEFINE_list("sweep_epsilons", [str(e) for e in DEFAULT_SWEEP],
                      "Target epsilons of the privacy-utility curves (empty: no sweep).")
    flags.DEFINE_float("noise_probability", 0.5, "p of the RanN methods' noise coin.")
    flags.DEFINE_enum("on_skip", "release", ("release", "drop"),
                      "RanN noiseless steps: release (the paper; no formal DP) or drop.")
    flags.DEFINE_integer("seeds", 1, "Repeat every run with this many seeds (mean and spread).")
    flags.DEFINE_integer("seed", 0, "First seed.")
    flags.DEFINE_list("attack_types", list(DEFAULT_ATTACKS),
                      "Membership-inference attacks (threshold, threshold-entropy, lr, mlp, rf, "
                      "knn); 'none' to skip.")
    flags.DEFINE_string("output_dir", "results", "Where the table and plot go.")
    flags.DEFINE_float("gamma", 0.5, "Residual perturbation: noise scale on every residual "
                       "branch (the method runs once, at this gamma).")
    flags.DEFINE_enum("residual_noise", "additive", train.RESIDUAL_NOISE,
                      "Residual perturbation: additive or multiplicative noise.")
    flags.DEFINE_float("activation_clip_norm", 1.0, "NeuralDP: per-example L2 clip of the "
                       "privatized activations.")
    flags.DEFINE_string("dataset", "digits", "Data set (as in train.py).")
    flags.DEFINE_string("data_dir", None, "Folder of the data set (not for the bundled ones).")
    flags.DEFINE_integer("image_size", None, "Resize images to this many pixels per side.")
    flags.DEFINE_integer("split_seed", 0, "Seed of the train/test split.")
    flags.DEFINE_string("model", "auto", "Model (as in train.py).")
    flags.DEFINE_integer("epochs", 15, "Epochs per run.")
    flags.DEFINE_integer("batch_size", 64, "Batch size (expected size under Poisson sampling).")
    flags.DEFINE_float("learning_rate", 0.01, "Learning rate.")
    flags.DEFINE_enum("optimizer", "adam", train.OPTIMIZERS, "Base optimizer.")
    flags.DEFINE_float("l2_norm_clip", 1.0, "Per-example L2 clip of the Gaussian methods.")
    flags.DEFINE_float("l1_norm_clip", 1.0, "Per-example L1 clip of the Laplace methods.")
    flags.DEFINE_float("delta", 1e-5, "Delta of (epsilon, delta)-DP.")
    flags.DEFINE_enum("sampling", "poisson", train.SAMPLINGS, "Batch sampling (as in train.py).")
    flags.DEFINE_integer("max_train_examples", None, "Use at most this many training examples.")
    flags.DEFINE_integer("max_test_examples", None, "Use at most this many test examples.")
    flags.DEFINE_bool("verbose", False, "Print every run's epoch lines.")


def _floats(name: str, values: Sequence[str]) -> List[float]:
    try:
        return [float(v) for v in values if str(v).strip()]
    except ValueError:
        raise ValueError(f"--{name} must be a comma-separated list of numbers, got "
                         f"{','.join(values)!r}.") from None


def config_from_flags() -> CompareConfig:
    """The CompareConfig the parsed flags describe."""
    base = train.TrainConfig(
        dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, image_size=FLAGS.image_size,
        split_seed=FLAGS.split_seed, model=FLAGS.model, epochs=FLAGS.epochs,
        batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate,
        optimizer=FLAGS.optimizer, l2_norm_clip=FLAGS.l2_norm_clip,
        l1_norm_clip=FLAGS.l1_norm_clip, delta=FLAGS.delta, sampling=FLAGS.sampling,
        max_train_examples=FLAGS.max_train_examples, max_test_examples=FLAGS.max_test_examples,
    )
    attacks = [a for a in FLAGS.attack_types if a.strip()]
    noise_multiplier = FLAGS.noise_multiplier
    target = None if noise_multiplier is not None and FLAGS["target_epsilon"].using_default_value \
        else FLAGS.target_epsilon
    sweep = _floats("sweep_epsilons", FLAGS.sweep_epsilons)
    if noise_multiplier is not None and FLAGS["sweep_epsilons"].using_default_value:
        sweep = []
    return CompareConfig(
        methods=tuple(FLAGS.methods), target_epsilon=target, noise_multiplier=noise_multiplier,
        sweep_epsilons=tuple(sweep), noise_probability=FLAGS.noise_probability,
        on_skip=FLAGS.on_skip, seeds=FLAGS.seeds, seed=FLAGS.seed,
        attack_types=None if attacks in ([], ["none"]) else tuple(attacks),
        output_dir=FLAGS.output_dir, gamma=FLAGS.gamma, residual_noise=FLAGS.residual_noise,
        activation_clip_norm=FLAGS.activation_clip_norm, base=base,
    )


def main(argv: List[str]) -> None:
    """Entry point: run the comparison and write the table and plot."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not FLAGS.verbose:
        absl_logging.set_verbosity(absl_logging.WARNING)  # the attack library logs every attack
    try:
        compare(config_from_flags(), verbose=FLAGS.verbose)
    except ValueError as error:
        sys.exit(f"compare.py: error: {error}")


if __name__ == "__main__":
    define_flags()
    from _cli import argv_with_helpful  # scripts/ is on sys.path when a script runs

    app.run(main, argv=argv_with_helpful())
