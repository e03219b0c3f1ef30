"""Log-log ROC figures for membership-inference attacks (matplotlib, Agg canvas, no pyplot state).

Carlini et al. (2022) argue that an attack should be judged by its true-positive rate at
very low false-positive rates, which a linear ROC plot squeezes into its corner; on
log-log axes that region fills the figure and the chance line is the diagonal.
Several methods can share one figure: pass one `(fpr, tpr)` curve per name.
"""

from __future__ import annotations

import os
from typing import Mapping, Optional, Sequence, Tuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DEFAULT_MIN_RATE = 1e-4
# The FPR whose TPR the legend reports, as in the LiRA paper's tables.
LEGEND_FPR = 1e-3
_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf",
           "#e377c2", "#7f7f7f", "#bcbd22"]  # ten distinct curves before a colour repeats

Curve = Tuple[Sequence[float], Sequence[float]]


def _check_curve(name: str, curve: Curve) -> Tuple[np.ndarray, np.ndarray]:
    """The curve as two float arrays of equal length, FPR ascending, or a ValueError."""
    try:
        fpr, tpr = curve
    except (TypeError, ValueError):
        raise ValueError(
            f"The curve {name!r} must be an `(fpr, tpr)` pair of arrays, got {type(curve).__name__}."
        ) from None
    fpr = np.asarray(fpr, dtype=np.float64).reshape(-1)
    tpr = np.asarray(tpr, dtype=np.float64).reshape(-1)
    if fpr.shape != tpr.shape or fpr.size < 2:
        raise ValueError(
            f"The curve {name!r} needs fpr and tpr arrays of the same length (>= 2 points), got "
            f"{fpr.size} and {tpr.size} points."
        )
    if not (np.all(np.isfinite(fpr)) and np.all(np.isfinite(tpr))):
        raise ValueError(f"The curve {name!r} contains NaN or infinite rates.")
    if fpr.min() < 0 or fpr.max() > 1 or tpr.min() < 0 or tpr.max() > 1:
        raise ValueError(f"The curve {name!r} has rates outside [0, 1].")
    if np.any(np.diff(fpr) < 0):
        raise ValueError(
            f"The curve {name!r} must list its points in increasing FPR (as sklearn's roc_curve does)."
        )
    return fpr, tpr


def curve_auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Area under a ROC curve given by its points (trapezoids; exact for a full sklearn curve)."""
    return float(np.trapezoid(tpr, fpr))


def curve_tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, max_fpr: float) -> float:
    """The largest TPR among the curve's points whose FPR is at most `max_fpr` (0 if none)."""
    allowed = fpr <= max_fpr
    return float(tpr[allowed].max()) if np.any(allowed) else 0.0


def plot_log_roc(
    curves: Mapping[str, Curve],
    path: str,
    *,
    title: Optional[str] = None,
    min_rate: float = DEFAULT_MIN_RATE,
) -> str:
    """Draws ROC curves on log-log axes to the PNG file `path` and returns `path`.

    Args:
      curves: one `(fpr, tpr)` pair of arrays per method name (FPR ascending, e.g. from
        `sklearn.metrics.roc_curve`); the legend shows each name with its AUC and its TPR
        at 0.1% FPR, both read from the curve.
      path: where to write the PNG; missing folders are created.
      title: figure title (default: a generic one).
      min_rate: lower end of both axes, in (0, 1). Rates below it (including the
        exact zeros at the start of every ROC curve) are drawn at the axis edge, so the
        TPR reached at FPR 0 stays visible.
    """
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ValueError(f"`path` must be a file path for the PNG, got {path!r}.")
    if not isinstance(curves, Mapping) or not curves:
        raise ValueError("`curves` must be a non-empty mapping of method name -> (fpr, tpr).")
    min_rate = float(min_rate)
    if not 0.0 < min_rate < 1.0:
        raise ValueError(f"`min_rate` must be in (0, 1), got {min_rate!r}.")
    path = os.fspath(path)
    checked = {str(name): _check_curve(str(name), curve) for name, curve in curves.items()}

    figure = Figure(figsize=(6.4, 6.0), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    axes.plot(
        [min_rate, 1.0], [min_rate, 1.0], color="0.6", linestyle="--", linewidth=1,
        label="chance (AUC 0.5)",
    )
    for i, (name, (fpr, tpr)) in enumerate(checked.items()):
        auc = curve_auc(fpr, tpr)
        tpr_low = curve_tpr_at_fpr(fpr, tpr, LEGEND_FPR)
        axes.plot(
            np.clip(fpr, min_rate, 1.0),
            np.clip(tpr, min_rate, 1.0),
            color=_COLORS[i % len(_COLORS)],
            linewidth=1.8,
            label=f"{name} (AUC {auc:.3f}, TPR {100 * tpr_low:.2f}% at 0.1% FPR)",
        )
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlim(min_rate, 1.0)
    axes.set_ylim(min_rate, 1.0)
    axes.set_aspect("equal", adjustable="box")
    axes.set_xlabel("false positive rate (non-members called members)")
    axes.set_ylabel("true positive rate (members found)")
    axes.grid(which="major", alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    axes.set_title(title or "Membership inference ROC (log-log)", fontsize=10, wrap=True)
    figure.tight_layout()

    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    figure.savefig(path, format="png", bbox_inches="tight")
    return path
