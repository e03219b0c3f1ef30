"""PNG figures for membership-inference reports (matplotlib, Agg canvas, no pyplot state)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Optional

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tfdp.attacks.attack_report import ENTIRE_DATASET

if TYPE_CHECKING:  # pragma: no cover
    from tfdp.attacks.attack_report import AttackReport

ATTACK_LABELS = {
    "threshold_attack": "loss threshold",
    "threshold_entropy_attack": "entropy threshold",
    "logistic_regression": "logistic regression",
    "multi_layered_perceptron": "MLP",
    "random_forest": "random forest",
    "k_nearest_neighbors": "k-NN",
}
_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]


def _label(name: str) -> str:
    return ATTACK_LABELS.get(name, name)


def plot_attack_report(report: "AttackReport", path: str, *, title: Optional[str] = None) -> str:
    """Draws the attacks' ROC curves (left) and the best AUC per slice (right) to `path` (PNG)."""
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ValueError(f"`path` must be a file path for the PNG, got {path!r}.")
    path = os.fspath(path)
    colors = {name: _COLORS[i % len(_COLORS)] for i, name in enumerate(report.per_attack)}
    slices = list(report.per_slice)
    height = max(5.0, 0.38 * len(slices) + 2.0)
    figure = Figure(figsize=(13, height), dpi=110)
    FigureCanvasAgg(figure)
    roc_axes, bar_axes = figure.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.15]})

    # ROC curves on the entire data set.
    roc_axes.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="chance (AUC 0.5)")
    for name, (fpr, tpr) in report.roc_curves.items():
        auc = report.per_attack[name]["auc"]
        roc_axes.plot(fpr, tpr, color=colors[name], linewidth=2, label=f"{_label(name)} (AUC {auc:.3f})")
    roc_axes.set_xlim(0, 1)
    roc_axes.set_ylim(0, 1.01)
    roc_axes.set_xlabel("false positive rate (non-members called members)")
    roc_axes.set_ylabel("true positive rate (members found)")
    roc_axes.set_title(
        f"ROC of the attacks, entire data set\n"
        f"({report.n_members} members, {report.n_nonmembers} non-members)"
    )
    roc_axes.set_aspect("equal", adjustable="box")
    roc_axes.grid(alpha=0.3)
    roc_axes.legend(loc="lower right", fontsize=9)

    # Best attack AUC per slice, the entire data set on top.
    best = []
    for slice_name in slices:
        attacks = report.per_slice[slice_name]
        name = max(attacks, key=lambda a: attacks[a]["auc"])
        best.append((slice_name, name, attacks[name]))
    positions = list(range(len(best)))[::-1]
    for y, (slice_name, name, metrics) in zip(positions, best):
        bar_axes.barh(
            y,
            metrics["auc"],
            color=colors.get(name, "0.5"),
            edgecolor="black" if slice_name == ENTIRE_DATASET else "none",
            height=0.7,
        )
        bar_axes.text(
            metrics["auc"] + 0.005,
            y,
            f"{metrics['auc']:.3f} {_label(name)} "
            f"({metrics['n_members']}/{metrics['n_nonmembers']})",
            va="center",
            fontsize=8,
        )
    bar_axes.axvline(0.5, color="0.3", linestyle="--", linewidth=1)
    bar_axes.set_yticks(positions)
    bar_axes.set_yticklabels([s.replace("_", " ") for s, _, _ in best], fontsize=9)
    bar_axes.set_xlim(0.0, 1.3)
    bar_axes.set_xticks([0.0, 0.25, 0.5, 0.75, 1.0])
    bar_axes.set_xlabel("best attack AUC on the slice (0.5 = chance; members/non-members in brackets)")
    bar_axes.set_title("Per-slice leakage")
    bar_axes.grid(axis="x", alpha=0.3)

    figure.suptitle(
        title
        or (
            f"Membership inference: best AUC {report.auc:.3f} ({_label(report.best_attack)}), "
            f"advantage {report.advantage:.3f}, TF Privacy epsilon lower bound "
            f"{report.epsilon_lower_bound:.2f} (delta=0, uncorrected)"
        ),
        fontsize=11,
    )
    figure.tight_layout(rect=(0, 0, 1, 0.95))
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    figure.savefig(path, format="png")
    return path
