"""The result of a membership-inference evaluation: metrics per attack and per slice."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Optional, Tuple

import numpy as np

ENTIRE_DATASET = "entire_dataset"

EPSILON_LOWER_BOUND_DEFINITION = (
    "TF Privacy's empirical epsilon lower bound: for every threshold on the attack's "
    "membership score (in both directions), a one-sided 95% lower confidence bound "
    "(alpha = 0.05, Bailey's method) on the ratio TPR/FPR (and TNR/FNR), whose log is "
    "a lower bound on epsilon for pure DP (delta = 0); the largest over all thresholds "
    "is reported, without a multiple-comparison correction, so it can come out above "
    "zero even for a model that leaks nothing. Use tfdp.attacks.audit to compare with "
    "an (epsilon, delta) claim: it uses a delta-aware, corrected bound."
)


def _json_number(value: Any) -> Any:
    """Plain float for JSON (NaN and infinities become strings)."""
    number = float(value)
    if math.isfinite(number):
        return number
    return str(number)


@dataclasses.dataclass
class AttackReport:
    """Membership-inference results for one model, members vs non-members.

    The headline numbers (`auc`, `advantage`, `ppv`, `epsilon_lower_bound`) are the
    best over the attacks run, on the entire data set (not the per-slice maxima,
    which pick the luckiest of many small slices).

    Attributes:
      per_attack: attack name -> metrics on the entire data set: "auc",
        "advantage" (max |TPR - FPR|), "ppv" (max positive predictive value),
        "epsilon_lower_bound" (TF Privacy's top bound, floored at 0; see
        `EPSILON_LOWER_BOUND_DEFINITION`), "epsilon_lower_bounds" (its top-5
        list), "n_members", "n_nonmembers".
      per_slice: slice name ("entire_dataset", "class=3", ...) -> attack name ->
        the same metrics on that slice.
      n_members / n_nonmembers: examples in the training (member) and held-out
        (non-member) sets.
      num_classes: classes of the model (2 for a one-output binary model).
      from_logits: whether the model's outputs were read as logits.
      attack_types: the attacks run, in order.
      accuracy_members, accuracy_nonmembers, mean_loss_members, mean_loss_nonmembers: the
        generalization gap the attacks exploit.
      roc_curves: attack name -> (fpr, tpr) arrays on the entire data set.
      membership_scores: attack name -> (member scores, non-member scores) on the
        entire data set (higher = more likely a member); used by `audit`.
      library_results: TF Privacy's `AttackResults`, for its own summaries.
    """

    per_attack: Dict[str, Dict[str, Any]]
    per_slice: Dict[str, Dict[str, Dict[str, Any]]]
    n_members: int
    n_nonmembers: int
    num_classes: int
    from_logits: bool
    attack_types: Tuple[str, ...]
    accuracy_members: float
    accuracy_nonmembers: float
    mean_loss_members: float
    mean_loss_nonmembers: float
    roc_curves: Dict[str, Tuple[np.ndarray, np.ndarray]] = dataclasses.field(repr=False)
    membership_scores: Dict[str, Tuple[np.ndarray, np.ndarray]] = dataclasses.field(repr=False)
    library_results: Any = dataclasses.field(default=None, repr=False)

    def _best(self, metric: str) -> float:
        return max(float(m[metric]) for m in self.per_attack.values())

    @property
    def auc(self) -> float:
        """Best attack AUC on the entire data set (0.5 = chance)."""
        return self._best("auc")

    @property
    def advantage(self) -> float:
        """Best attacker advantage, max over thresholds of |TPR - FPR| (0 = chance)."""
        return self._best("advantage")

    @property
    def ppv(self) -> float:
        """Best positive predictive value of the attacks."""
        return self._best("ppv")

    @property
    def epsilon_lower_bound(self) -> float:
        """Best TF Privacy epsilon lower bound over the attacks (>= 0; see the definition)."""
        return self._best("epsilon_lower_bound")

    @property
    def best_attack(self) -> str:
        """Name of the attack with the highest AUC on the entire data set."""
        return max(self.per_attack, key=lambda name: self.per_attack[name]["auc"])

    @property
    def epsilon_lower_bound_definition(self) -> str:
        """What `epsilon_lower_bound` means (delta, confidence, method)."""
        return EPSILON_LOWER_BOUND_DEFINITION

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready summary (no arrays)."""

        def clean(metrics: Dict[str, Any]) -> Dict[str, Any]:
            out = {}
            for key, value in metrics.items():
                if isinstance(value, (list, tuple, np.ndarray)):
                    out[key] = [_json_number(v) for v in value]
                elif isinstance(value, (int, np.integer)):
                    out[key] = int(value)
                else:
                    out[key] = _json_number(value)
            return out

        return {
            "auc": _json_number(self.auc),
            "advantage": _json_number(self.advantage),
            "ppv": _json_number(self.ppv),
            "epsilon_lower_bound": _json_number(self.epsilon_lower_bound),
            "epsilon_lower_bound_definition": EPSILON_LOWER_BOUND_DEFINITION,
            "best_attack": self.best_attack,
            "n_members": int(self.n_members),
            "n_nonmembers": int(self.n_nonmembers),
            "num_classes": int(self.num_classes),
            "from_logits": bool(self.from_logits),
            "attack_types": list(self.attack_types),
            "accuracy_members": _json_number(self.accuracy_members),
            "accuracy_nonmembers": _json_number(self.accuracy_nonmembers),
            "mean_loss_members": _json_number(self.mean_loss_members),
            "mean_loss_nonmembers": _json_number(self.mean_loss_nonmembers),
            "per_attack": {name: clean(m) for name, m in self.per_attack.items()},
            "per_slice": {
                slice_name: {name: clean(m) for name, m in attacks.items()}
                for slice_name, attacks in self.per_slice.items()
            },
        }

    def summary(self) -> str:
        """A few lines for a terminal."""
        lines = [
            f"Membership inference on {self.n_members} members vs {self.n_nonmembers} non-members "
            f"(accuracy {self.accuracy_members:.3f} vs {self.accuracy_nonmembers:.3f}):",
            f"  best AUC {self.auc:.3f} ({self.best_attack}), advantage {self.advantage:.3f}, "
            f"PPV {self.ppv:.3f}, TF Privacy epsilon lower bound {self.epsilon_lower_bound:.3f} "
            "(delta = 0, 95% per threshold, uncorrected)",
        ]
        for name, metrics in self.per_attack.items():
            lines.append(
                f"  {name:<26} AUC {metrics['auc']:.3f}  advantage {metrics['advantage']:.3f}  "
                f"PPV {metrics['ppv']:.3f}  eps_lb {metrics['epsilon_lower_bound']:.3f}"
            )
        return "\n".join(lines)

    def plot(self, path: str, *, title: Optional[str] = None) -> str:
        """Writes the ROC curves and a per-slice bar chart to a PNG at `path`; returns `path`."""
        from tfdp.attacks.plots import plot_attack_report

        return plot_attack_report(self, path, title=title)
