"""`RunResult`: what one training run produced, and its JSON metrics record."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, List, Optional

from tfdp._json import jsonable
from tfdp.run.config import RunConfig
from tfdp.run.progress import TRAINING_METRICS_NOTE


@dataclasses.dataclass
class RunResult:
    """The outcome of `train_and_evaluate`.

    Attributes:
      config: the RunConfig actually run (validated; a calibrated noise multiplier filled in).
      method: the method's name (e.g. "Gaussian RegN-DP-SGD").
      dataset: the data set's `summary()`.
      model: the trained Keras model (not part of the JSON record).
      privacy: the privacy record (a tfdp.accounting.PrivacyRecord: epsilon, statement, ...).
      ledger: applied_steps, noisy_steps, dropped_steps and steps (applied + dropped).
      utility: test metrics (accuracy, precision, recall, F1, AUC).
      history: one record per trained epoch (seconds, steps, noisy steps, epsilon, the test
        split's val_loss / val_accuracy when validated; the training loss and accuracy only
        with config.record_training_metrics, as they are not covered by the DP guarantee).
      seconds_per_epoch: mean wall time of the trained epochs (None when none was trained).
      attack_report: the membership-inference AttackReport when config.attack_types is set.
      audit: the AuditResult of that report against `privacy`.
      export_path: the exported SavedModel's version folder when config.export_dir is set.
    """

    config: RunConfig
    method: str
    dataset: Dict[str, Any]
    model: Any
    privacy: Any
    ledger: Dict[str, int]
    utility: Dict[str, Any]
    history: List[Dict[str, Any]]
    seconds_per_epoch: Optional[float]
    attack_report: Any = None
    audit: Any = None
    export_path: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        """The JSON-ready metrics record (no model; infinite epsilons as "inf")."""
        record: Dict[str, Any] = {
            "method": self.method,
            "config": dataclasses.asdict(self.config),
            "dataset": self.dataset,
            "utility": self.utility,
            "privacy": self.privacy.to_dict(),
            "ledger": self.ledger,
            "history": self.history,
            "seconds_per_epoch": self.seconds_per_epoch,
        }
        if self.config.record_training_metrics:
            record["training_metrics_note"] = TRAINING_METRICS_NOTE
        if self.export_path is not None:
            record["export_path"] = self.export_path
        if self.attack_report is not None:
            record["attacks"] = self.attack_report.to_dict()
        if self.audit is not None:
            record["audit"] = self.audit.to_dict()
        return jsonable(record)


def write_metrics(result: RunResult, path: str) -> None:
    """Writes `result.to_dict()` to `path` as JSON (creating its folder)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result.to_dict(), f, indent=2)
