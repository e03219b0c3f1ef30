"""The per-epoch progress line of a run (test metrics, epsilon, noisy steps) and its record."""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import keras

from tfdp.accounting import format_epsilon
from tfdp.mechanisms import NoiseSchedule
from tfdp.run.config import OTHER_METHODS, RunConfig
from tfdp.run.methods import step_counts


# Logs that are not training metrics: the accountant's epsilon (PrivacyCallback).
_PUBLIC_LOGS = ("epsilon", "epsilon_noisy_steps_only")
# Keras' per-step placeholder of a private step without training metrics (the step count).
_STEP_COUNT_LOG = "dp_steps"
TRAINING_METRICS_NOTE = (
    "The training loss and accuracy in this history are computed from the (private) "
    "training batches without noise: they are NOT covered by the DP guarantee.")


def recorded_logs(logs: Dict[str, Any], training_metrics: bool) -> Dict[str, float]:
    """The epoch's logs a run records: the test split's ("val_") metrics and epsilon, plus
    the training metrics (loss, accuracy on the training batches) only when asked."""
    kept = {}
    for key, value in logs.items():
        if key == _STEP_COUNT_LOG:
            continue
        if key.startswith("val_") or key in _PUBLIC_LOGS or training_metrics:
            kept[key] = float(value)
    return kept


class EpochLog(keras.callbacks.Callback):
    """Logs one line per epoch and keeps one record per epoch in `history`.

    The step counts are read from the optimizer (its DP ledger for DP-SGD), so a
    resumed run reports each epoch's own steps, not the restored totals. The training
    loss and accuracy (noiseless functions of the training batches) are left out unless
    `config.record_training_metrics`.
    """

    def __init__(self, config: RunConfig, optimizer: keras.optimizers.Optimizer,
                 log: Callable[[str], None]):
        super().__init__()
        self._config = config
        self._optimizer = optimizer
        self._log = log
        self._start = 0.0
        self._last_counts = (0, 0, 0)
        self.history: List[Dict[str, Any]] = []

    def _counts(self) -> Tuple[int, int, int]:
        """(applied, noisy, dropped) steps so far."""
        ledger = step_counts(self._config, self._optimizer)
        return ledger["applied_steps"], ledger["noisy_steps"], ledger["dropped_steps"]

    def on_train_begin(self, logs: Optional[Dict[str, Any]] = None) -> None:
        self._last_counts = self._counts()

    def on_epoch_begin(self, epoch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        logs = recorded_logs(logs or {}, self._config.record_training_metrics)
        applied, noisy, dropped = self._counts()
        steps = (applied - self._last_counts[0]) + (dropped - self._last_counts[2])
        noisy_epoch = noisy - self._last_counts[1]
        self._last_counts = (applied, noisy, dropped)
        record = {
            "epoch": epoch + 1,
            "seconds": time.perf_counter() - self._start,
            "steps": steps,
            "noisy_steps": noisy_epoch,
            **logs,
        }
        self.history.append(record)
        self._log(self._line(epoch, logs, record, steps, noisy_epoch))

    def _line(self, epoch: int, logs: Dict[str, Any], record: Dict[str, Any], steps: int,
              noisy_epoch: int) -> str:
        parts = [f"epoch {epoch + 1}/{self._config.epochs}"]
        if self._config.record_training_metrics:
            parts += [f"train_loss={logs.get('loss', float('nan')):.4f}",
                      f"train_accuracy={logs.get('accuracy', float('nan')):.4f} (no noise, "
                      "not covered by the DP guarantee)"]
        if "val_loss" in logs:
            parts.append(f"test_loss={logs['val_loss']:.4f}")
        if "val_accuracy" in logs:
            parts.append(f"test_accuracy={logs['val_accuracy']:.4f}")
        if self._config.mechanism in OTHER_METHODS:
            parts.append("epsilon=inf (no formal guarantee)")
        elif self._config.is_private:
            parts.append(f"noisy_steps={noisy_epoch}/{steps}")
            eps = logs.get("epsilon")
            if eps is not None:
                parts.append(f"epsilon={format_epsilon(eps)}")
            eps_noisy = logs.get("epsilon_noisy_steps_only")
            if eps_noisy is not None and self._config.noise_schedule == NoiseSchedule.RANDOM:
                parts.append(f"epsilon_noisy_steps_only={format_epsilon(eps_noisy)} "
                             "(paper's convention, not a guarantee)")
        else:
            parts.append("epsilon=inf (no privacy)")
        parts.append(f"{record['seconds']:.1f}s")
        return "  ".join(parts)
