"""The privacy-utility figure of a comparison: accuracy and attack AUC against epsilon.

One job: draw the rows that `tfdp.run.comparison` aggregates (the sweep, and the main table
for the uncalibrated reference methods such as No-DP). matplotlib is imported inside the
functions, so importing the comparison library does not load a plotting backend.
"""

from __future__ import annotations

import math
import textwrap
from typing import Any, Dict, List

__all__ = ["plot_privacy_utility", "privacy_utility_figure"]


def plot_privacy_utility(sweep: List[Dict[str, Any]], table: List[Dict[str, Any]], path: str,
                         title: str) -> None:
    """Draws `privacy_utility_figure` to a PNG at `path`."""
    fig = privacy_utility_figure(sweep, table, title)  # selects the Agg backend first
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=120)
    plt.close(fig)


def privacy_utility_figure(sweep: List[Dict[str, Any]], table: List[Dict[str, Any]],
                           title: str) -> "matplotlib.figure.Figure":
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
         "Accuracy vs epsilon over noisy steps only\n"
         "(paper's convention; not a guarantee for RanN)",
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
    legend = key_axis.legend(handles, labels, loc="upper left", frameon=False, fontsize=9,
                             borderaxespad=0.0)
    # The notes go right below the legend, whose height depends on the number of methods.
    fig.canvas.draw()
    legend_bottom = key_axis.transAxes.inverted().transform(
        legend.get_window_extent())[0][1]
    key_axis.text(
        0.0, min(0.42, legend_bottom - 0.04),
        "How to read it\n"
        "- Formal epsilon: the (epsilon, delta)-DP guarantee of the run.\n"
        "- The column right of the dashed line holds runs with NO formal\n"
        "  guarantee (epsilon = inf): No-DP, RanN runs that released\n"
        "  exact clipped gradients on their noiseless steps, residual\n"
        "  perturbation and NeuralDP (its claimed epsilon is not a guarantee).\n"
        "- Epsilon over noisy steps only: the dynamic-DP paper's figure for\n"
        "  RanN; it ignores the noiseless steps, so it is not a guarantee.\n"
        "- Attack AUC 0.5 means the membership attack does no better than\n"
        "  guessing; the dotted line is No-DP.\n"
        "- 'per patient': epsilon protects all of one patient's examples;\n"
        "  every other epsilon protects one example.",
        transform=key_axis.transAxes, va="top", fontsize=8.5, family="monospace")
    # Wrapped: the settings line is longer than the figure is wide.
    fig.suptitle(textwrap.fill(title, width=110), fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return fig


def _reference_color(row: Dict[str, Any], references: List[Dict[str, Any]]) -> str:
    """Black for No-DP; other uncalibrated methods (residual perturbation) get their own colour."""
    if row["method"] == "No-DP":
        return "black"
    others = [r["method"] for r in references if r["method"] != "No-DP"]
    return ("tab:olive", "tab:cyan", "tab:gray")[others.index(row["method"]) % 3]
