"""How much one method leaks: LiRA and the one-run audits, trained the method's own way.

    leakage = LeakageConfig(lira_shadows=8, audit_canaries=1000)
    columns, roc = measure_leakage(run_config, data, leakage)

Every model an attack trains goes through `train_model` with the run's own settings (the
same method, model, recipe and target epsilon; the noise is calibrated again for the
training set each model sees), on the fast path, without test-split evaluation or per-epoch
epsilon:

* LiRA (`tfdp.attacks.lira`): `lira_shadows` + 1 models on random halves of the training
  split; each serves in turn as the target of the others.
* The black-box one-run audit: canaries (random inputs with random labels) each added to
  the training split with probability 1/2, one run, scored from the final model.
* The white-box one-run audit (DP-SGD mechanisms only): gradient canaries carried through
  the DP optimizer's own noise query every step (`tfdp.optimizers.gradient_canaries`).

`check_bounds` compares the bounds with the run's formal epsilon: a bound above a finite
epsilon is a bug in tfdp or its accountant, and is said so loudly.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Dict, List, Optional, Tuple

import keras
import numpy as np

import tfdp.attacks
from tfdp._validation import check_choice, check_probability
from tfdp.attacks.one_run_audit import CANARY_KINDS
from tfdp.mechanisms.banded_mf_mechanism import BandedMFMechanism
from tfdp.run.config import RunConfig
from tfdp.run.training import patient_data, train_model

BANDED_MF = BandedMFMechanism.name

# comparison.csv's columns (names fixed by the issue that asked for them).
LIRA_COLUMNS: Tuple[str, ...] = ("lira_auc", "lira_tpr_at_0.1pct_fpr", "lira_tpr_at_1pct_fpr")
AUDIT_COLUMNS: Tuple[str, ...] = ("audit_epsilon_lower_bound",
                                  "audit_epsilon_lower_bound_whitebox")
LEAKAGE_COLUMNS: Tuple[str, ...] = LIRA_COLUMNS + AUDIT_COLUMNS

TrainFn = Callable[..., keras.Model]


@dataclasses.dataclass(frozen=True)
class LeakageConfig:
    """How hard to attack each method (0 turns an attack off).

    Attributes:
      lira_shadows: LiRA's shadow models (the target and each shadow train once).
      audit_canaries: canaries of each one-run audit (black-box and white-box).
      canary_kind: the black-box canaries: "noise" (random inputs, random labels) or
        "mislabeled" (training examples with a wrong label).
      confidence: confidence of the audits' lower bounds.
    """

    lira_shadows: int = 8
    audit_canaries: int = 1000
    canary_kind: str = "noise"
    confidence: float = 0.95

    def validated(self) -> "LeakageConfig":
        """A checked copy; ValueError on settings that cannot run."""
        for name in ("lira_shadows", "audit_canaries"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"--{name} must be a whole number >= 0 (0 turns it off), "
                                 f"got {value!r}.")
        if self.audit_canaries == 1:
            raise ValueError("--audit_canaries needs at least 2 canaries (or 0: no audit).")
        check_choice("canary_kind", self.canary_kind, CANARY_KINDS)
        c = check_probability("confidence", self.confidence)
        if not 0.0 < c < 1.0:
            raise ValueError(f"confidence must be in (0, 1), got {c}.")
        return self

    @property
    def active(self) -> bool:
        """True when at least one attack runs."""
        return bool(self.lira_shadows or self.audit_canaries)


def method_train_fn(config: RunConfig, data: "tfdp.data.Dataset") -> TrainFn:
    """`train_fn(train_data, seed, gradient_canaries=None) -> model` for the attacks.

    Trains `config`'s method on `train_data` (an `(x, y)` tuple replacing `data`'s
    training split) with `seed`; attacks, checkpoints and exports are off.
    """
    config = dataclasses.replace(config, attack_types=None, model_dir=None, export_dir=None,
                                 metrics_path=None).validated()
    data = patient_data(config, data, log=lambda _: None)

    def train_fn(train_data: Tuple[np.ndarray, np.ndarray], seed: int,
                 gradient_canaries: Optional[np.ndarray] = None) -> keras.Model:
        x, y = train_data
        # A fresh model each time: drop the previous graphs (without a full garbage collection
        # per model, about a second each; Python collects as it goes).
        keras.backend.clear_session(free_memory=False)
        subset = dataclasses.replace(data, x_train=x, y_train=y,
                                     groups_train=patient_ids_of(data, x))
        return train_model(dataclasses.replace(config, seed=int(seed)), subset,
                           log=lambda _: None, validate=False, track_privacy=False,
                           gradient_canaries=gradient_canaries).model

    return train_fn


def patient_ids_of(data: "tfdp.data.Dataset", x: np.ndarray) -> Optional[np.ndarray]:
    """The patient id of each row of `x` (an attack's training set drawn from `data`'s pool).

    A row of the pool keeps its patient; any other row (a black-box canary) is a patient of
    its own, so that including a canary adds one patient: the adjacency the per-patient
    guarantee covers, which the audit's bound is compared against. None without ids.
    """
    if data.groups_train is None:
        return None
    pool = np.ascontiguousarray(data.x_train).reshape(data.num_train, -1)
    owner = {row.tobytes(): str(g) for row, g in zip(pool, data.groups_train)}
    rows = np.ascontiguousarray(np.asarray(x, pool.dtype)).reshape(len(x), -1)
    return np.array([owner.get(row.tobytes(), f"canary-{i}") for i, row in enumerate(rows)])


def _lira_refusal(config: RunConfig, pool_size: int) -> Optional[str]:
    """Why LiRA cannot attack `config`'s method on a pool of `pool_size`, or None.

    LiRA's models train on random halves of the pool; under banded matrix factorization
    each step samples one of `bands` folds, which needs batch_size * bands examples.
    """
    half = pool_size // 2
    if config.mechanism != BANDED_MF or config.batch_size * config.bands <= half:
        return None
    return (f"no LiRA: its models train on half the training set ({half} examples), fewer "
            f"than batch_size * bands = {config.batch_size * config.bands} that cyclic "
            "Poisson sampling needs")


def measure_leakage(config: RunConfig, data: "tfdp.data.Dataset", leakage: LeakageConfig, *,
                    log: Callable[[str], None] = print,
                    progress: Optional[Callable[[str], None]] = None,
                    ) -> Tuple[Dict[str, Any], Any]:
    """LiRA and the one-run audits of `config`'s method; returns (columns, LiRA report).

    The columns are `LEAKAGE_COLUMNS` (None where an attack is off or does not apply),
    plus `audit_whitebox_note` or `lira_note` when an attack does not apply, and the audits'
    own records under `audits`. The LiRA report (or None) holds the ROC curve. `log`
    gets a line per attack, `progress` (if given) a line per model the attacks train.
    """
    leakage = leakage.validated()
    columns: Dict[str, Any] = {key: None for key in LEAKAGE_COLUMNS}
    train_fn = method_train_fn(config, data)
    pool = (data.x_train, data.y_train)
    name = config.method_name()
    report = None
    trainings = ((leakage.lira_shadows + 1 if leakage.lira_shadows else 0)
                 + (0 if not leakage.audit_canaries else 2 if config.uses_dp_optimizer else 1))
    log(f"  {name}: training {trainings} attack models ...")
    lira_refusal = _lira_refusal(config, len(pool[0]))
    if leakage.lira_shadows and lira_refusal:
        columns["lira_note"] = lira_refusal
        log(f"  {name}: {lira_refusal}")
    elif leakage.lira_shadows:
        report = tfdp.attacks.lira(train_fn, pool, num_shadow=leakage.lira_shadows,
                                   seed=config.seed, log=progress)
        lira = report.to_dict()
        columns.update({key: lira[key] for key in LIRA_COLUMNS})
        log(f"  {name}: LiRA ({leakage.lira_shadows} shadows) AUC {report.auc:.3f}, "
            f"TPR {100 * report.tpr_at_fpr(0.001):.2f}% at 0.1% FPR, "
            f"{100 * report.tpr_at_fpr(0.01):.2f}% at 1% FPR")
    audits: Dict[str, Any] = {}
    if leakage.audit_canaries:
        settings = dict(num_canaries=leakage.audit_canaries, delta=config.delta,
                        confidence=leakage.confidence, seed=config.seed)
        black = tfdp.attacks.one_run_audit(train_fn, pool, threat_model="blackbox",
                                           canary_kind=leakage.canary_kind, log=progress,
                                           **settings)
        audits["blackbox"] = black.to_dict()
        columns["audit_epsilon_lower_bound"] = float(black.epsilon_lower_bound)
        line = f"  {name}: one-run audit lower bounds: black-box {black.epsilon_lower_bound:.2f}"
        if config.mechanism == BANDED_MF:
            columns["audit_whitebox_note"] = (
                "no white-box audit: its gradient canaries assume independent noise per "
                "step, and banded matrix factorization correlates it")
        elif config.uses_dp_optimizer:
            white = tfdp.attacks.one_run_audit(train_fn, pool, threat_model="whitebox",
                                               log=progress, **settings)
            audits["whitebox"] = white.to_dict()
            columns["audit_epsilon_lower_bound_whitebox"] = float(white.epsilon_lower_bound)
            line += f", white-box {white.epsilon_lower_bound:.2f}"
        else:
            columns["audit_whitebox_note"] = (
                "no white-box audit: the method has no DP optimizer whose noise query could "
                "carry gradient canaries")
        log(line + f" ({leakage.audit_canaries} canaries, {100 * leakage.confidence:g}% "
            "confidence)")
    columns["audits"] = audits or None
    return columns, report


def check_bounds(row: Dict[str, Any]) -> List[str]:
    """Warnings for a row whose empirical bounds contradict (or expose) its epsilons.

    A lower bound above the finite formal epsilon is a violation: tfdp or its accountant
    is wrong. For the random schedule that releases noiseless steps (epsilon inf), a
    bound above the paper's noisy-steps epsilon shows that convention is not a guarantee.
    """
    epsilon = row.get("epsilon")
    noisy = row.get("epsilon_noisy_steps_only")
    messages = []
    for key in AUDIT_COLUMNS:
        bound = row.get(key)
        if bound is None:
            continue
        kind = "white-box" if key.endswith("whitebox") else "black-box"
        if epsilon is not None and math.isfinite(epsilon) and bound > epsilon:
            messages.append(
                f"VIOLATION: {row['method']}: the {kind} audit proves epsilon >= {bound:.2f}, "
                f"above the formal epsilon {epsilon:.2f}. This is a bug in tfdp or in its "
                "accountant; do not trust this method's epsilon until it is found.")
        elif (epsilon is not None and math.isinf(epsilon) and noisy is not None
              and math.isfinite(noisy) and bound > noisy):
            messages.append(
                f"{row['method']}: the {kind} audit proves epsilon >= {bound:.2f}, above the "
                f"noisy-steps-only figure {noisy:.2f}: that convention is not a guarantee "
                "(the steps released without noise leak).")
    return messages
