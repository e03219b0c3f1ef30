"""Renders docs/results.md from the JSON of `make demo`, `make benchmark` and `make peers`.

    make results-page                      # = python tools/results_page.py
    python tools/results_page.py --comparison=other/comparison.json --benchmark=none

It copies the run's files into docs/data/ (comparison.json, benchmark.json, the Opacus
peer's opacus_peer.json and the two figures `make demo` draws), then renders docs/results.md from docs/data/ alone, so the page
and the data it shows are committed together and `--check` can tell whether the page is
what its data gives. An input that does not exist is skipped: the data already in
docs/data/ is kept, and a section without data says how to make it. The page holds no
time stamp, so rendering the same JSON twice gives the same bytes.

Standard library only (no TensorFlow import): it runs in a second.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
from typing import Any, Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.path.join(ROOT, "docs", "data")
PAGE = os.path.join(ROOT, "docs", "results.md")
COMPARISON = "comparison.json"
BENCHMARK = "benchmark.json"
PEERS = "opacus_peer.json"  # peers/opacus_zoo.py (`make peers`)
FIGURES = ("privacy_utility.png", "lira_roc.png")
BASELINE, FAST, FAST_GRID = "nodp", "tfdp_fast", "tfdp_fast_grid"
PEER_HOOKS, PEER_GHOST = "opacus", "opacus_ghost"


# ----- cells -----

def _number(value: Any) -> Optional[float]:
    """A float from a JSON value ("inf" and "nan" are written as strings), or None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def fixed(value: Any, digits: int = 3) -> str:
    """A number with `digits` decimals; "inf" for no guarantee; "-" when missing."""
    number = _number(value)
    if number is None:
        return "-"
    if math.isinf(number):
        return "inf"
    if math.isnan(number):
        return "nan"
    return f"{number:.{digits}f}"


def with_spread(row: Dict[str, Any], key: str, digits: int = 3) -> str:
    """A mean, with its spread over seeds when there were several ("0.954 ± 0.004")."""
    text = fixed(row.get(key), digits)
    spread = _number(row.get(f"{key}_std"))
    if spread is not None and text != "-":
        text += f" ± {spread:.{digits}f}"
    return text


def percent(value: Any, digits: int = 2) -> str:
    """A fraction as a percentage ("1.04%")."""
    number = _number(value)
    return "-" if number is None else f"{100 * number:.{digits}f}%"


def _escape(text: Any) -> str:
    """Text for a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(header: List[str], rows: List[List[str]]) -> List[str]:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_escape(c) for c in row) + " |" for row in rows]
    return lines


# ----- the comparison (make demo) -----

def _epsilon_cell(row: Dict[str, Any]) -> str:
    text = fixed(row.get("epsilon"), 2)
    unit = row.get("privacy_unit")
    if unit and unit != "example" and text != "inf":
        text += f" per {unit}"
    return text


def _noisy_cell(row: Dict[str, Any]) -> str:
    number = _number(row.get("noisy_steps_percent"))
    if number is None:
        return "-"
    return f"{number:.0f}%"  # compare.py writes a percentage (0 to 100)


def comparison_section(record: Optional[Dict[str, Any]]) -> List[str]:
    """The main job's table, its settings, the sweep and the notes."""
    lines = ["## The comparison (`make demo`)", ""]
    if record is None:
        return lines + [
            "No comparison recorded yet. Run `make demo` (it writes "
            "`results/comparison.json`), then `make results-page`.", ""]
    settings = record.get("settings", {})
    base = settings.get("base", {})
    data = record.get("dataset", {})
    leakage = settings.get("leakage", {}) or {}
    seeds = settings.get("seeds", 1)
    described = [
        f"Data: **{data.get('name', '?')}**, {data.get('num_train', '?')} training and "
        f"{data.get('num_test', '?')} test examples.",
        f"Budget: {record.get('budget', '?')} at delta {base.get('delta', '?')} "
        f"({base.get('accountant', '?')} accounting), shared by every private method.",
        f"Training: model `{base.get('model', '?')}`, {base.get('epochs', '?')} epochs, "
        f"batch {base.get('batch_size', '?')}, {base.get('optimizer', '?')} at learning rate "
        f"{base.get('learning_rate', '?')}, L2 clip {base.get('l2_norm_clip', '?')}; "
        f"{seeds} seed{'s' if seeds != 1 else ''} (means ± standard deviations; an epsilon "
        "is the largest over seeds, never an average).",
    ]
    if leakage:
        described.append(
            f"Leakage (first seed): LiRA with {leakage.get('lira_shadows', '?')} shadow models, "
            f"one-run audits with {leakage.get('audit_canaries', '?')} canaries.")
    lines += [f"- {d}" for d in described] + [""]
    header = ["method", "test accuracy", "epsilon (guarantee)", "epsilon, noisy steps only",
              "noisy steps", "threshold attack AUC", "LiRA AUC", "LiRA TPR at 0.1% FPR",
              "audit bound, black-box", "audit bound, white-box", "audit consistent"]
    rows = []
    for row in record.get("table", []):
        consistent = row.get("audit_consistent")
        rows.append([
            row.get("method", "?"), with_spread(row, "accuracy"), _epsilon_cell(row),
            fixed(row.get("epsilon_noisy_steps_only"), 2), _noisy_cell(row),
            fixed(row.get("attack_auc")), fixed(row.get("lira_auc")),
            percent(row.get("lira_tpr_at_0.1pct_fpr")),
            fixed(row.get("audit_epsilon_lower_bound"), 2),
            fixed(row.get("audit_epsilon_lower_bound_whitebox"), 2),
            "-" if consistent is None else ("yes" if consistent else "**VIOLATION**"),
        ])
    lines += table(header, rows) + [""]
    warnings = [w for row in record.get("table", []) for w in row.get("leakage_warnings", [])]
    if warnings:
        lines += ["Warnings printed by the run:", ""] + [f"- {w}" for w in warnings] + [""]
    sweep = record.get("sweep", [])
    if sweep:
        targets = sorted({_number(r.get("target_epsilon")) for r in sweep} - {None})
        methods = list(dict.fromkeys(r.get("method") for r in sweep))
        cells = {(r.get("method"), _number(r.get("target_epsilon"))): r for r in sweep}
        lines += ["### Accuracy along the privacy-utility sweep", ""]
        lines += table(["method"] + [f"epsilon {t:g}" for t in targets],
                       [[m] + [with_spread(cells[(m, t)], "accuracy") if (m, t) in cells
                               else "-" for t in targets] for m in methods]) + [""]
    for figure, caption in (("privacy_utility.png", "Privacy-utility curve"),
                            ("lira_roc.png", "LiRA ROC curves (log-log)")):
        if os.path.exists(os.path.join(DATA_DIR, figure)):
            lines += [f"![{caption}](data/{figure})", ""]
    notes = record.get("notes")
    if notes:
        lines += ["### How to read the columns", "", notes, "",
                  "More on each column: [The comparison](comparison.md) and "
                  "[Attacks and audits](attacks.md).", ""]
    return lines


# ----- the benchmark (make benchmark) -----

def _seconds(result: Dict[str, Any]) -> str:
    return fixed(result.get("seconds_per_epoch"), 3)


def _ratio(entry: Dict[str, Any], config: str, key: str = "time_ratio") -> str:
    value = _number(entry.get("ratios", {}).get(config, {}).get(key))
    return "-" if value is None else f"{value:.2f}x"


def _paths(entry: Dict[str, Any]) -> str:
    counts = entry.get("plan_counts")
    if not isinstance(counts, dict):
        return "-"
    return " / ".join(str(counts.get(k, 0)) for k in ("rule", "local", "jacobian"))


def _peer_cell(entry: Optional[Dict[str, Any]]) -> str:
    """The Opacus peer's DP / no-DP ratio of a model, ghost clipping's in brackets."""
    if not entry:
        return "-"
    cells = []
    for loop in (PEER_HOOKS, PEER_GHOST):
        result = entry.get("results", {}).get(loop, {})
        if "error" in result:
            cells.append("fails (" + str(result["error"]).split(":")[0] + ")")
        else:
            cells.append(_ratio(entry, loop))
    return f"{cells[0]} ({cells[1]})"


def _failures(record: Dict[str, Any], heading: str) -> List[str]:
    """A list under `heading` of every model's configuration whose result is an error."""
    errors = [f"{name} {config}: {result['error']}"
              for name, entry in record.get("models", {}).items()
              for config, result in entry.get("results", {}).items() if "error" in result]
    return [heading, ""] + [f"- {e}" for e in errors] + [""] if errors else []


def peers_section(peers: Dict[str, Any]) -> List[str]:
    """The Opacus peer's run: settings, seconds per epoch of each loop and the ratios."""
    settings = peers.get("settings", {})
    lines = [
        "### The Opacus peer (`make peers`)", "",
        f"`peers/opacus_zoo.py`: the same nets in PyTorch {settings.get('torch', '?')} with "
        f"Opacus {settings.get('opacus', '?')}, {settings.get('cpu', '?')}, "
        f"{settings.get('threads', '?')} threads; best of {settings.get('epochs', '?')} epochs "
        f"after {settings.get('warmup_epochs', '?')} warm-up, the three loops in turns. Each "
        "ratio is against the peer's own non-private loop.", ""]
    header = ["model", "batch", "parameters", "no-DP s/epoch", "Opacus s/epoch",
              "ghost clipping s/epoch", "Opacus / no-DP", "ghost / no-DP"]
    rows = []
    for name, entry in peers.get("models", {}).items():
        results = entry.get("results", {})
        rows.append([name, str(entry.get("batch_size", "-")), f"{entry.get('parameters', 0):,}",
                     _seconds(results.get(BASELINE, {})), _seconds(results.get(PEER_HOOKS, {})),
                     _seconds(results.get(PEER_GHOST, {})), _ratio(entry, PEER_HOOKS),
                     _ratio(entry, PEER_GHOST)])
    lines += table(header, rows) + [""]
    lines += _failures(peers, "Loops Opacus could not run:")
    return lines


def benchmark_section(report: Optional[Dict[str, Any]],
                      peers: Optional[Dict[str, Any]] = None) -> List[str]:
    """One row per zoo model: no-DP and fast-path epoch times, their ratios, memory, paths;
    with the Opacus peer's record, its ratios beside them and its own table below."""
    lines = ["## Speed of the fast path (`make benchmark`)", ""]
    peer_lines = peers_section(peers) if peers is not None else []
    if report is None:
        return lines + [
            "No benchmark recorded yet. Run `make benchmark` (it writes "
            "`results/benchmark.json`), then `make results-page`.", ""] + peer_lines
    settings = report.get("settings", {})
    lines += [
        f"TensorFlow {settings.get('tensorflow', '?')}, Keras {settings.get('keras', '?')}, "
        f"Python {settings.get('python', '?')}, {settings.get('cpu_count', '?')} CPUs, "
        f"TF_ENABLE_ONEDNN_OPTS={settings.get('tf_enable_onednn_opts')}; best of "
        f"{settings.get('epochs', '?')} timed epochs after {settings.get('warmup_epochs', '?')} "
        f"warm-up, {settings.get('rounds', '?')} rounds"
        + (" (**--quick: a smoke test, not a measurement**)" if settings.get("quick") else "")
        + ".", ""]
    header = ["model", "batch", "parameters", "no-DP s/epoch", "DP s/epoch", "DP / no-DP",
              "peak memory ratio", "grid noise / no-DP", "rule / local / jacobian"]
    if peers is not None:
        header.append("Opacus DP / no-DP (ghost clipping)")
    rows = []
    for name, entry in report.get("models", {}).items():
        results = entry.get("results", {})
        rows.append([
            name, str(entry.get("batch_size", "-")), f"{entry.get('parameters', 0):,}",
            _seconds(results.get(BASELINE, {})), _seconds(results.get(FAST, {})),
            _ratio(entry, FAST), _ratio(entry, FAST, "memory_ratio"), _ratio(entry, FAST_GRID),
            _paths(entry),
        ])
        if peers is not None:
            rows[-1].append(_peer_cell(peers.get("models", {}).get(name)))
    lines += table(header, rows) + [""]
    lines += _failures(report, "Failed configurations:")
    unavailable = report.get("unavailable", {})
    if unavailable:
        lines += ["Not run:", ""] + [f"- `{k}`: {v}" for k, v in unavailable.items()] + [""]
    return lines + peer_lines


# ----- the page -----

def render(comparison: Optional[Dict[str, Any]], benchmark: Optional[Dict[str, Any]],
           peers: Optional[Dict[str, Any]] = None) -> str:
    """The whole page, from the records (None: not recorded yet; the Opacus peer's is
    optional)."""
    lines = [
        "# Results",
        "",
        "<!-- Generated by tools/results_page.py from docs/data/*.json: do not edit by hand. -->",
        "",
        "This page is generated from the JSON the runs write, never typed in. To regenerate",
        "it after a new run:",
        "",
        "<!-- not run: make demo takes about 10 minutes, make benchmark longer -->",
        "```sh",
        "make demo            # writes results/comparison.json and the figures",
        "make benchmark       # writes results/benchmark.json",
        "make peers           # optional, the Opacus peer: results/opacus_peer.json",
        "make results-page    # copies them to docs/data/ and renders this page",
        "```",
        "",
        "The raw records are beside this page: [comparison.json](data/comparison.json)"
        if comparison is not None else "No raw record is committed yet.",
        "",
    ]
    if comparison is not None and benchmark is not None:
        lines[-2] += " and [benchmark.json](data/benchmark.json)."
    elif comparison is not None:
        lines[-2] += "."
    elif benchmark is not None:
        lines[-2] = "The raw record is beside this page: [benchmark.json](data/benchmark.json)."
    if peers is not None:
        peer_link = "[opacus_peer.json](data/opacus_peer.json)"
        lines[-2] = (lines[-2].rstrip(".") + f"; the Opacus peer's: {peer_link}."
                     if comparison is not None or benchmark is not None else
                     f"The Opacus peer's raw record is beside this page: {peer_link}.")
    lines += comparison_section(comparison) + benchmark_section(benchmark, peers)
    return "\n".join(lines).rstrip("\n") + "\n"


def _load(path: str) -> Optional[Dict[str, Any]]:
    if not os.path.exists(path):
        return None
    with open(path) as handle:
        return json.load(handle)


def _copy_in(source: Optional[str], name: str) -> None:
    """Copies a run's file into docs/data/ under `name` (nothing when it does not exist)."""
    if not source or source == "none" or not os.path.exists(source):
        return
    os.makedirs(DATA_DIR, exist_ok=True)
    target = os.path.join(DATA_DIR, name)
    if os.path.abspath(source) != os.path.abspath(target):
        shutil.copyfile(source, target)
        print(f"copied {source} -> {os.path.relpath(target, ROOT)}")


def page_from_data() -> str:
    """The page that docs/data/ gives."""
    return render(_load(os.path.join(DATA_DIR, COMPARISON)),
                  _load(os.path.join(DATA_DIR, BENCHMARK)),
                  _load(os.path.join(DATA_DIR, PEERS)))


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comparison", default=os.path.join("results", COMPARISON),
                        help="compare.py's comparison.json ('none': keep docs/data's)")
    parser.add_argument("--benchmark", default=os.path.join("results", BENCHMARK),
                        help="benchmark.py's benchmark.json ('none': keep docs/data's)")
    parser.add_argument("--peers", default=os.path.join("results", PEERS),
                        help="peers/opacus_zoo.py's opacus_peer.json ('none': keep docs/data's)")
    parser.add_argument("--check", action="store_true",
                        help="copy nothing; exit 1 if docs/results.md is not what docs/data/ gives")
    args = parser.parse_args(argv)
    if args.check:
        with open(PAGE) as handle:
            current = handle.read()
        if current != page_from_data():
            print("docs/results.md is stale: run `python tools/results_page.py "
                  "--comparison=none --benchmark=none`", file=sys.stderr)
            return 1
        return 0
    _copy_in(args.comparison, COMPARISON)
    if args.comparison and args.comparison != "none" and os.path.exists(args.comparison):
        for figure in FIGURES:
            _copy_in(os.path.join(os.path.dirname(args.comparison), figure), figure)
    _copy_in(args.benchmark, BENCHMARK)
    _copy_in(args.peers, PEERS)
    with open(PAGE, "w") as handle:
        handle.write(page_from_data())
    print(f"wrote {os.path.relpath(PAGE, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
