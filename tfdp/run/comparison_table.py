"""The outputs of a comparison: the text table, its notes, comparison.csv / sweep.csv and the JSON.

One job: turn the aggregated rows of `tfdp.run.comparison` into text and files. Nothing here
trains or computes a figure; epsilons are spelled by `tfdp.accounting.format_epsilon` ("inf"
where there is no guarantee) and the JSON goes through `tfdp._json.jsonable`.
"""

from __future__ import annotations

import csv
import json
import math
from typing import Any, Dict, List, Mapping, Sequence

from tfdp._json import jsonable
from tfdp.accounting import format_epsilon

__all__ = ["NOTES", "TABLE_COLUMNS", "cell", "format_table", "write_csv", "write_json"]

# Columns of comparison.csv and sweep.csv, in order (with "_std" companions when --seeds > 1).
TABLE_COLUMNS = (
    "method", "target_epsilon", "noise_multiplier", "accuracy", "precision", "recall", "f1",
    "epsilon", "epsilon_noisy_steps_only", "epsilon_claimed", "noisy_steps_per_epoch",
    "steps_per_epoch",
    "noisy_steps_percent", "seconds_per_epoch", "attack_auc", "attack_advantage",
    "epsilon_lower_bound", "audit_consistent", "lira_auc", "lira_tpr_at_0.1pct_fpr",
    "lira_tpr_at_1pct_fpr", "audit_epsilon_lower_bound", "audit_epsilon_lower_bound_whitebox",
    "train_seconds", "leakage_seconds", "seeds", "privacy_unit", "randomness",
)

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
    "noise/ep and noise%: steps with noise per epoch and their share of all steps. "
    "LiRA_AUC, TPR@0.1%: the likelihood-ratio attack with shadow models (trained the method's "
    "own way on random halves of the training split); its TPR at 0.1% FPR is what a confident "
    "attacker gets (chance: 0.1%). audit_LB, audit_LB_wb: one-run audit lower bounds on epsilon "
    "(95%; black-box canary examples, white-box gradient canaries seen in every noised step); "
    "0 means no evidence found, not proof of privacy. "
    "'per patient': the privacy unit is a patient (all of one patient's examples; on digits "
    "synthetic pseudo-patients of 1-5 images), sampled at the example rows' rate, its mean "
    "gradient clipped once; its eps is per patient. Every other eps is per example, which for "
    "a patient with k images only gives group privacy (k x eps, delta x k x e^((k-1) eps)). "
    "'(seeded: insecure)': the run's noise and batches were made reproducible from "
    "--insecure_reproducible_seed, so its eps holds only against someone who does not know "
    "that seed; every other run's noise and batches come from the operating system's entropy."
)

_HEADER = ("method", "acc", "prec", "recall", "f1", "eps", "eps_noisy", "eps_claim", "noise/ep",
           "noise%", "s/epoch", "MIA_AUC", "MIA_adv", "eps_LB", "LiRA_AUC", "TPR@0.1%",
           "audit_LB", "audit_LB_wb")


def cell(value: Any, digits: int = 3) -> str:
    """One table cell: "-" when missing, a float with `digits` decimals, "inf", "nan".

    The table keeps its own digits (2 for epsilons, where `format_epsilon`'s 3 would widen
    every column); an infinite value is spelled by the one epsilon formatter.
    """
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isinf(value):
            return format_epsilon(value)
        if math.isnan(value):
            return "nan"
        return f"{value:.{digits}f}"
    return str(value)


def _percent(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def format_table(rows: List[Dict[str, Any]]) -> str:
    """The main table as aligned text (means, with "±" spreads when rows hold "_std" values)."""
    lines = []
    for r in rows:
        def pm(key: str, digits: int = 3) -> str:
            text = cell(r.get(key), digits)
            if r.get(f"{key}_std") is not None:
                text += f"±{r[f'{key}_std']:.{digits}f}"
            return text
        # A run whose noise and batches a seed reproduces is marked on its method.
        seeded = r.get("randomness", "secret") != "secret"
        lines.append([
            r["method"] + (" (seeded: insecure)" if seeded else ""), pm("accuracy"), pm("precision"), pm("recall"), pm("f1"),
            cell(r["epsilon"], 2), cell(r["epsilon_noisy_steps_only"], 2),
            cell(r.get("epsilon_claimed"), 2),
            pm("noisy_steps_per_epoch", 1), pm("noisy_steps_percent", 0),
            pm("seconds_per_epoch", 2),
            pm("attack_auc"), pm("attack_advantage"), pm("epsilon_lower_bound", 2),
            cell(r.get("lira_auc")), _percent(r.get("lira_tpr_at_0.1pct_fpr")),
            cell(r.get("audit_epsilon_lower_bound"), 2),
            cell(r.get("audit_epsilon_lower_bound_whitebox"), 2),
        ])
    widths = [max(len(str(x)) for x in col) for col in zip(_HEADER, *lines)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*_HEADER), fmt.format(*("-" * w for w in widths))]
                     + [fmt.format(*line) for line in lines])


def write_csv(rows: List[Dict[str, Any]], path: str,
              columns: Sequence[str] = TABLE_COLUMNS) -> None:
    """Writes `rows` with `columns` first (and their "_std" companions when present).

    Infinite values are written as `format_epsilon` spells them ("inf"); missing values
    are empty cells.
    """
    extra = [f"{c}_std" for c in columns if any(f"{c}_std" in r for r in rows)]
    cols = list(columns) + extra
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({c: (format_epsilon(r[c]) if isinstance(r.get(c), float)
                                 and math.isinf(r[c]) else r.get(c)) for c in cols})


def write_json(record: Mapping[str, Any], path: str) -> None:
    """Writes `record` as indented JSON, infinities as "inf" (`tfdp._json.jsonable`)."""
    with open(path, "w") as f:
        json.dump(jsonable(record), f, indent=2)
