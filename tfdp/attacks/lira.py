"""The likelihood-ratio membership-inference attack (LiRA; Carlini et al., 2022).

"Membership Inference Attacks From First Principles" (IEEE S&P 2022) trains shadow
models on random halves of a data pool (each model takes each example with probability
1/2, independently), so that every example is a member of about half of them. For each
example the attack fits one Gaussian to the model's logit-scaled confidence on it across
the shadows that trained on it ("in") and one across those that did not ("out"), then
scores the target model's confidence by the likelihood ratio of the two fits. Unlike a
global loss threshold it calibrates per example: an easy example that every model gets
right is not mistaken for a member.

    report = tfdp.attacks.lira(train_fn, (x, y), num_shadow=16)
    report.auc, report.tpr_at_fpr(0.001), report.to_dict(), report.plot("lira.png")

As in the paper's evaluation, all models are drawn the same way and each in turn plays
the target while the others are its shadows (leave-one-out); the scores of all targets
are pooled into one ROC curve. The Gaussian fits and the likelihood ratio are TF
Privacy's `advanced_mia.compute_score_lira`.

Memberships are drawn independently (not balanced per example) so that a model that
leaks nothing scores an AUC of 0.5: see `membership_matrix`. The price is that for a
given target a few examples have no "in" or no "out" shadow; `lira_from_statistics`
says how it scores them.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import warnings
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
from sklearn import metrics

from tfdp._tf_privacy import advanced_mia
from tfdp._validation import check_positive_int
from tfdp.attacks._predictions import pool_arrays
from tfdp.attacks._statistics import model_logit_confidence
from tfdp.attacks.roc_plot import curve_tpr_at_fpr, plot_log_roc

ONLINE = "online"
OFFLINE = "offline"
# compute_score_lira's names for the two modes: both Gaussians, or only the "out" one.
_LIBRARY_OPTION = {ONLINE: "both", OFFLINE: "out"}

ASSUMPTIONS = (
    "The attacker knows the training algorithm and its hyperparameters, can train shadow "
    "models on data from the same distribution as the target's training data, and has "
    "black-box access to the target model's output probabilities."
)

TrainFn = Callable[[Tuple[np.ndarray, np.ndarray], int], Any]

_TRAIN_FN_HELP = (
    "`train_fn(train_data, seed)` must train a model on `train_data`, an `(x, y)` tuple, and "
    "return it: a Keras model or any callable `model(x_batch, training=False)` that returns "
    "logits or probabilities of shape (batch, num_classes)."
)
# Membership matrices are redrawn this often before giving up on a usable one (see
# `_draw_keep`; a model is empty, or full, with probability 2**-num_examples, so only tiny
# pools ever need a second draw).
_MAX_DRAWS = 1000
# The online attack (both Gaussians) runs unless more than this fraction of the pooled
# (target, example) pairs lack an "in" or an "out" shadow. With independent memberships
# the expected fraction is 2 * 2**-num_shadow: 25% with 3 shadows, 12.5% with 4, 6.25%
# with 5, 3.1% with 6, 0.8% with 8. Above 5% the "in" Gaussian would be a stand-in (the
# average over examples) for too many pairs, and the offline attack, which needs only
# "out" shadows, is the more honest choice.
_MAX_FALLBACK_FRACTION = 0.05


def _check_pool(data: Any) -> Tuple[np.ndarray, np.ndarray]:
    """The pool as `(x, y)` arrays (`pool_arrays`) of at least 2 examples."""
    x, y = pool_arrays(data)
    if len(x) < 2:
        raise ValueError(
            f"`data` has {len(x)} example(s); LiRA needs at least 2 (hundreds or more for a "
            "meaningful ROC curve), since each model trains on a random half of the pool."
        )
    return x, y


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"`seed` must be a whole number >= 0, got {seed!r}.")
    return int(seed)


def _check_num_shadow(num_shadow: Any) -> int:
    if isinstance(num_shadow, bool) or not isinstance(num_shadow, numbers.Integral) or num_shadow < 1:
        raise ValueError(
            f"`num_shadow` must be a whole number >= 1, got {num_shadow!r}: LiRA needs at least "
            "one shadow model besides the target (the paper uses 16 or more; with 6 or more "
            "nearly every example has both 'in' and 'out' shadows and the online attack runs)."
        )
    return int(num_shadow)


def _check_num_targets(num_targets: Any, num_models: int) -> int:
    if num_targets is None:
        return num_models
    if (
        isinstance(num_targets, bool)
        or not isinstance(num_targets, numbers.Integral)
        or not 1 <= num_targets <= num_models
    ):
        raise ValueError(
            f"`num_targets` must be None (every model) or a whole number in [1, {num_models}] "
            f"(the number of models, num_shadow + 1), got {num_targets!r}."
        )
    return int(num_targets)


def membership_matrix(num_models: int, num_examples: int, rng: np.random.Generator) -> np.ndarray:
    """A random (num_models, num_examples) bool matrix, True where a model trains on an example.

    Every entry is an independent fair coin: keep[k, i] ~ Bernoulli(1/2). Independence,
    not balance, is what the leave-one-out evaluation needs. If every example were in
    exactly floor(M/2) or ceil(M/2) of the M models, the target's own membership would
    tell how many of its shadows hold the example: given that the target trained on it,
    the shadows hold it one time less. A member's score would then come from one "in"
    shadow fewer and one "out" shadow more than a non-member's, which lowers its
    likelihood ratio, so that a model that leaks nothing would score a pooled AUC below
    0.5: in simulations about 0.46 with 4 or 7 shadows, 0.48 with 8, 0.49 with 16 (an
    even number of models is worst, every example then being in exactly half), and DP
    models in a comparison run came out at 0.45-0.46 with 4-8 shadows, "worse than
    chance". With independent draws the shadows' memberships carry no information
    about the target's, so a leak-free model's member and non-member scores have the
    same distribution and its AUC is 0.5 in expectation.

    The price: for a given target, an example has no "in" shadow, or no "out" one, with
    probability 2**-(M-1) each; `lira_from_statistics` handles those pairs.
    """
    num_models = check_positive_int("num_models", num_models)
    num_examples = check_positive_int("num_examples", num_examples)
    return rng.random((num_models, num_examples)) < 0.5


def _draw_keep(num_models: int, num_examples: int, seed: int) -> np.ndarray:
    """`membership_matrix` drawn from `seed`, redrawn until it is usable.

    Usable: every model has a training example, and no M - 1 models all train on the whole
    pool (else the remaining model, as the target, would have no "out" shadow for any
    example, and the library no average over examples to fall back on). Only tiny pools
    ever need a second draw.
    """
    rng = np.random.default_rng(seed)
    for _ in range(_MAX_DRAWS):
        keep = membership_matrix(num_models, num_examples, rng)
        if np.all(keep.any(axis=1)) and int(keep.all(axis=1).sum()) <= num_models - 2:
            return keep
    raise ValueError(
        f"Could not split {num_examples} examples among {num_models} models so that each model "
        "trains on at least one (and no target's shadows all train on every example); give "
        "more examples (or fewer shadow models)."
    )


def _check_model(model: Any, index: int) -> None:
    if model is None or not callable(model):
        raise ValueError(
            f"train_fn returned {type(model).__name__} for model {index}, which is not a "
            f"model. {_TRAIN_FN_HELP}"
        )


def _shadow_statistics(
    stats: np.ndarray, keep: np.ndarray, target: int
) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """Per example, the (m, 1) statistics of the target's shadows that were in / out of training."""
    shadows = np.arange(len(stats)) != target
    shadow_stats, shadow_keep = stats[shadows], keep[shadows]
    stat_in = [shadow_stats[shadow_keep[:, i], i][:, np.newaxis] for i in range(stats.shape[1])]
    stat_out = [shadow_stats[~shadow_keep[:, i], i][:, np.newaxis] for i in range(stats.shape[1])]
    return stat_in, stat_out


def _missing_shadows(keep: np.ndarray, num_targets: int) -> Tuple[np.ndarray, np.ndarray]:
    """Bool arrays (num_targets, N): for each target, whether an example has no in / no out shadow."""
    in_count = keep.sum(axis=0)
    shadow_in = in_count[np.newaxis, :] - keep[:num_targets]
    shadow_out = (len(keep) - 1) - shadow_in
    return shadow_in == 0, shadow_out == 0


def _choose_mode(no_in: np.ndarray, no_out: np.ndarray) -> str:
    """ONLINE unless more than 5% of the (target, example) pairs lack an in or an out shadow.

    Such a pair still gets a score (the library puts the average over examples in place of
    the missing Gaussian's mean), but beyond 5% too many online scores would rest on a
    stand-in Gaussian, and OFFLINE, which needs only the out shadows (and lacks them half
    as often), is used instead.
    """
    return OFFLINE if np.mean(no_in | no_out) > _MAX_FALLBACK_FRACTION else ONLINE


def _num_fallback_pairs(no_in: np.ndarray, no_out: np.ndarray, mode: str) -> int:
    """Pairs scored with a stand-in mean: lacking a group of shadows that `mode` uses."""
    return int(np.sum(no_in | no_out) if mode == ONLINE else np.sum(no_out))


def lira_from_statistics(
    stats: np.ndarray,
    keep: np.ndarray,
    *,
    num_targets: Optional[int] = None,
    fix_variance: bool = True,
) -> "LiraReport":
    """LiRA's leave-one-out evaluation from precomputed statistics.

    Args:
      stats: float array (M, N): stats[k, i] is model k's logit-scaled confidence on
        example i (see `tfdp.attacks._statistics.logit_confidence`).
      keep: bool array (M, N): keep[k, i] is True when model k trained on example i.
      num_targets: how many of the models (the first ones) play the target in turn;
        None for all M.
      fix_variance: one variance for all examples (recommended by the paper with few
        shadow models) instead of one per example. One per example is unstable with few
        shadows: an example with a single in (or out) shadow gets a standard deviation of
        0 from the library (a spike; its scores become huge), which independent draws
        produce for a fraction 2 * S * 2**-S of the pairs with S = M - 1 shadows (6% at 8).

    Returns:
      A `LiraReport` pooling the scores of all targets (higher = more likely a member).
      The mode is "online" (both Gaussians) unless more than 5% of the (target, example)
      pairs lack an "in" or an "out" shadow, then "offline" (the "out" Gaussian only).
      A pair without shadows of a group the mode uses (`report.num_fallback_pairs` of
      them) is scored, as TF Privacy does, with the average of that group's per-example
      means over the other examples in place of its own mean (and, with
      `fix_variance=False`, the average per-example standard deviation in place of its
      own). Expect a fraction 2 * 2**-(M-1) of the pairs to need it online.
    """
    stats = np.asarray(stats, dtype=np.float64)
    keep = np.asarray(keep)
    if stats.ndim != 2 or keep.shape != stats.shape:
        raise ValueError(
            f"`stats` and `keep` must both have shape (num_models, num_examples); got "
            f"{stats.shape} and {keep.shape}."
        )
    if keep.dtype != np.bool_:
        raise ValueError(f"`keep` must be a bool array, got dtype {keep.dtype}.")
    num_models, num_examples = stats.shape
    if num_models < 2:
        raise ValueError(f"LiRA needs a target and at least one shadow model; got {num_models} model(s).")
    if not np.all(np.isfinite(stats)):
        raise ValueError("`stats` contains NaN or infinite values.")
    if not isinstance(fix_variance, (bool, np.bool_)):
        raise ValueError(f"`fix_variance` must be True or False, got {fix_variance!r}.")
    num_targets = _check_num_targets(num_targets, num_models)
    no_in, no_out = _missing_shadows(keep, num_targets)
    mode = _choose_mode(no_in, no_out)
    lacking = no_out.all(axis=1) | (no_in.all(axis=1) if mode == ONLINE else False)
    if np.any(lacking):
        raise ValueError(
            f"With this `keep`, target model {int(np.argmax(lacking))} has, for every example, "
            "no shadow model that trained on it or none that did not: LiRA cannot fit a "
            "Gaussian for it. Give the models different random halves of the pool."
        )
    num_fallback_pairs = _num_fallback_pairs(no_in, no_out, mode)

    scores, is_member, target_index = [], [], []
    for target in range(num_targets):
        stat_in, stat_out = _shadow_statistics(stats, keep, target)
        with warnings.catch_warnings():
            # An example without in (or out) shadows has an empty (0, 1) array: its median
            # (and, with fix_variance=False, its std) is NaN, with a warning, and the
            # library replaces it by the average over the other examples.
            warnings.simplefilter("ignore", RuntimeWarning)
            library_score = advanced_mia.compute_score_lira(
                stats[target][:, np.newaxis],
                stat_in,
                stat_out,
                option=_LIBRARY_OPTION[mode],
                fix_variance=bool(fix_variance),
            )
        # The library's score is log Pr(out) - log Pr(in), low for members: negate it so
        # that, like every tfdp attack score, higher means "member".
        scores.append(-np.asarray(library_score, dtype=np.float64))
        is_member.append(keep[target].copy())
        target_index.append(np.full(num_examples, target, dtype=np.int64))

    return LiraReport(
        scores=np.concatenate(scores),
        is_member=np.concatenate(is_member),
        target_index=np.concatenate(target_index),
        num_models=int(num_models),
        num_examples=int(num_examples),
        num_targets=int(num_targets),
        mode=mode,
        fix_variance=bool(fix_variance),
        keep=keep.copy(),
        stats=stats.copy(),
        num_fallback_pairs=num_fallback_pairs,
    )


def lira(
    train_fn: TrainFn,
    data: Any,
    *,
    num_shadow: int = 16,
    seed: int = 0,
    num_targets: Optional[int] = None,
    fix_variance: bool = True,
    from_logits: Optional[bool] = None,
    batch_size: int = 256,
    log: Optional[Callable[[str], Any]] = print,
) -> "LiraReport":
    """Runs the likelihood-ratio membership-inference attack (LiRA) with `num_shadow` shadows.

    Trains M = num_shadow + 1 models with `train_fn`, each on a random half of `data`
    (each model takes each example with probability 1/2, independently; see
    `membership_matrix` for why not exactly half), reads each model's
    logit-scaled confidence log p_y - log(1 - p_y) on the whole pool, then lets each of
    the first `num_targets` models play the target with the other M - 1 as its shadows.

    Args:
      train_fn: `train_fn(train_data, seed) -> model`; `train_data` is an `(x, y)` tuple of
        the selected examples and `seed` an int (`seed + k` for model k). The model is a
        Keras model or any callable `model(x_batch, training=False)` returning logits or
        probabilities (batch, num_classes). It should train the way the model under
        evaluation was trained: the attack measures that training procedure.
      data: the pool, an `(x, y)` tuple of arrays, or a `tfdp.data.Dataset` (its training
        split).
      num_shadow: shadow models per target (>= 1). A pair (target, example) lacks in or
        out shadows with probability 2 * 2**-num_shadow; the online attack runs when at
        most 5% of the pairs do (in practice num_shadow >= 6), else the offline one.
        Either way a model that leaks nothing scores an AUC of 0.5 in expectation.
      seed: seeds the membership matrix and, as `seed + k`, the training of model k.
      num_targets: how many models play the target (None: all M); fewer saves only the
        scoring time, since every model is trained anyway.
      fix_variance: one Gaussian variance shared by all examples (the paper's advice with
        fewer than about 64 shadows) rather than one per example.
      from_logits: whether the models output logits (None: detect, see
        `tfdp.attacks._predictions`).
      batch_size: prediction batch size.
      log: called with one progress line per trained model; None for silence.

    Returns:
      A `LiraReport`.
    """
    if not callable(train_fn):
        raise ValueError(f"`train_fn` must be callable, got {type(train_fn).__name__}. {_TRAIN_FN_HELP}")
    x, y = _check_pool(data)
    num_shadow = _check_num_shadow(num_shadow)
    seed = _check_seed(seed)
    batch_size = check_positive_int("batch_size", batch_size)
    if log is not None and not callable(log):
        raise ValueError(f"`log` must be a callable taking one string, or None; got {log!r}.")
    num_models = num_shadow + 1
    num_targets = _check_num_targets(num_targets, num_models)
    if not isinstance(fix_variance, (bool, np.bool_)):
        raise ValueError(f"`fix_variance` must be True or False, got {fix_variance!r}.")

    keep = _draw_keep(num_models, len(x), seed)
    stats = np.empty(keep.shape, dtype=np.float64)
    for k in range(num_models):
        model = train_fn((x[keep[k]], y[keep[k]]), seed + k)
        _check_model(model, k)
        stats[k] = model_logit_confidence(model, (x, y), from_logits=from_logits, batch_size=batch_size)
        del model  # only its statistics are needed; let a large model go before the next one
        if log is not None:
            log(f"LiRA: model {k + 1}/{num_models} trained ({int(keep[k].sum())} examples)")
    report = lira_from_statistics(stats, keep, num_targets=num_targets, fix_variance=fix_variance)
    if log is not None and report.mode == OFFLINE:
        log(
            f"LiRA: with num_shadow={num_shadow} more than 5% of the (target, example) pairs "
            "have no 'in' or no 'out' shadow model, so the offline attack (the 'out' Gaussian "
            "only) was used; num_shadow >= 6 normally runs the online attack."
        )
    return report


@dataclasses.dataclass
class LiraReport:
    """Results of LiRA, the scores of all targets pooled into one ROC curve.

    Attributes:
      scores: float array (num_targets * num_examples,): the attack's score of each
        (target, example) pair; higher means "member".
      is_member: bool array, same length: whether the target trained on the example.
      target_index: int array, same length: which model was the target.
      num_models: models trained (target and shadows, num_shadow + 1).
      num_examples: size of the pool.
      num_targets: models that played the target.
      mode: "online" (in and out Gaussians) or "offline" (out Gaussian only).
      fix_variance: whether one variance was shared by all examples.
      keep: bool array (num_models, num_examples), True where a model trained on an example.
      stats: float array (num_models, num_examples), each model's logit-scaled confidence.
      num_fallback_pairs: pooled pairs whose example had, for that target, no shadows of
        a group the mode uses (online: no in or no out shadow; offline: no out shadow),
        scored with the average over examples in place of the missing fit.
      auc: area under the pooled ROC curve (0.5 = chance).
      fpr_curve, tpr_curve, thresholds: the pooled ROC curve, every threshold kept.
    """

    scores: np.ndarray
    is_member: np.ndarray
    target_index: np.ndarray
    num_models: int
    num_examples: int
    num_targets: int
    mode: str
    fix_variance: bool
    keep: Optional[np.ndarray] = None
    stats: Optional[np.ndarray] = None
    num_fallback_pairs: int = 0
    auc: float = dataclasses.field(init=False)
    fpr_curve: np.ndarray = dataclasses.field(init=False, repr=False)
    tpr_curve: np.ndarray = dataclasses.field(init=False, repr=False)
    thresholds: np.ndarray = dataclasses.field(init=False, repr=False)

    def __post_init__(self):
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        self.is_member = np.asarray(self.is_member).reshape(-1).astype(bool)
        self.target_index = np.asarray(self.target_index, dtype=np.int64).reshape(-1)
        self.num_fallback_pairs = int(self.num_fallback_pairs)
        if not (len(self.scores) == len(self.is_member) == len(self.target_index)):
            raise ValueError(
                f"`scores`, `is_member` and `target_index` must have the same length; got "
                f"{len(self.scores)}, {len(self.is_member)} and {len(self.target_index)}."
            )
        if not np.all(np.isfinite(self.scores)):
            raise ValueError("The LiRA scores contain NaN or infinite values.")
        num_members = int(self.is_member.sum())
        if num_members == 0 or num_members == len(self.is_member):
            raise ValueError(
                "The pooled LiRA scores need both members and non-members to draw a ROC curve; "
                f"got {num_members} members out of {len(self.is_member)}. Use more targets or "
                "a larger pool."
            )
        self.auc = float(metrics.roc_auc_score(self.is_member, self.scores))
        # Every threshold is kept: the maximum TPR at a given FPR can sit on a point that
        # sklearn would otherwise drop as collinear.
        self.fpr_curve, self.tpr_curve, self.thresholds = metrics.roc_curve(
            self.is_member, self.scores, drop_intermediate=False
        )

    @property
    def num_members(self) -> int:
        """Pooled (target, example) pairs where the target trained on the example."""
        return int(self.is_member.sum())

    @property
    def num_nonmembers(self) -> int:
        """Pooled (target, example) pairs where it did not."""
        return int(len(self.is_member) - self.is_member.sum())

    def tpr_at_fpr(self, fpr: float) -> float:
        """The largest TPR over the ROC thresholds whose FPR is at most `fpr`, in (0, 1).

        FPRs below 1 / num_nonmembers cannot be resolved: there the answer is the TPR at
        zero false positives.
        """
        if isinstance(fpr, bool) or not isinstance(fpr, numbers.Real) or not math.isfinite(fpr):
            raise ValueError(f"`fpr` must be a number in (0, 1), got {fpr!r}.")
        if not 0.0 < fpr < 1.0:
            raise ValueError(
                f"`fpr` must be in (0, 1) (e.g. 0.001 for 0.1%), got {fpr!r}."
            )
        return curve_tpr_at_fpr(self.fpr_curve, self.tpr_curve, fpr)  # the curve starts at FPR 0

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready summary (no per-example arrays)."""
        return {
            "lira_auc": float(self.auc),
            "lira_tpr_at_0.1pct_fpr": self.tpr_at_fpr(0.001),
            "lira_tpr_at_1pct_fpr": self.tpr_at_fpr(0.01),
            "num_models": int(self.num_models),
            "num_examples": int(self.num_examples),
            "num_targets": int(self.num_targets),
            "num_members": self.num_members,
            "num_nonmembers": self.num_nonmembers,
            "mode": self.mode,
            "fix_variance": bool(self.fix_variance),
            "fallback_pairs": int(self.num_fallback_pairs),
            "assumptions": ASSUMPTIONS,
        }

    def plot(self, path: str, *, title: Optional[str] = None) -> str:
        """Writes the pooled log-log ROC curve to the PNG file `path` and returns `path`.

        Both axes start at max(1e-4, 1 / num_nonmembers), the smallest FPR the pooled
        scores can resolve; the legend shows the AUC and the TPR at 0.1% FPR.
        """
        min_rate = max(1e-4, 1.0 / self.num_nonmembers)
        if min_rate >= 1.0:  # a single non-member: fall back to the usual range
            min_rate = 1e-4
        title = title or (
            f"LiRA ({self.mode}): {self.num_models} models, {self.num_examples} examples, "
            f"{self.num_targets} targets pooled"
        )
        return plot_log_roc(
            {f"LiRA {self.mode}": (self.fpr_curve, self.tpr_curve)}, path, title=title,
            min_rate=min_rate,
        )
