"""The one-training-run privacy audit (Steinke, Nasr and Jagielski, NeurIPS 2023).

    result = tfdp.attacks.one_run_audit(train_fn, (x_train, y_train), num_canaries=1000)
    result.epsilon_lower_bound, result.num_guesses, result.num_correct, result.description

m canaries are each included in the training run independently with probability 1/2.
After training, an auditor scores every canary (higher = "more likely included"),
guesses "in" for the highest-scoring, "out" for the lowest, and abstains on the rest.
If the run is (eps, delta)-DP, the number of correct guesses among r cannot be much
larger than a Binomial(r, e^eps / (1 + e^eps)) (Theorem 5.2 of the paper), so many
correct guesses reject small epsilons. The result is a statistical LOWER bound on the
run's epsilon from one training run: it can show that a claimed epsilon is too small
(a bug), never that the run is private.

Two threat models:
  * "blackbox": canaries are extra training examples (random-noise inputs with random
    labels, or pool examples with a wrong label); the auditor only sees the trained
    model's confidence in each canary's label.
  * "whitebox": canaries are gradients installed in the DP optimizer (a Dirac vector
    of norm equal to the clip on its own coordinate, through the optimizer's noise
    query); the optimizer accumulates the score. This audits the mechanism itself.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np
from scipy import special, stats

from tfdp._json import jsonable
from tfdp._validation import check_choice
from tfdp.attacks._predictions import pool_arrays
from tfdp.attacks._statistics import model_logit_confidence

THREAT_MODELS = ("blackbox", "whitebox")
CANARY_KINDS = ("noise", "mislabeled")
# Fractions of m tried as the number of guesses r (then rounded to even, >= 2). Fixed in
# advance: choosing r after seeing which r works best would need its own correction.
DEFAULT_GUESS_FRACTIONS = (0.1, 0.2, 0.5, 1.0)
# The bisection stops when the bracket on epsilon is this narrow.
_EPSILON_TOLERANCE = 1e-6
# Past this epsilon q = e^eps / (1 + e^eps) is 1 in float64: every p-value is 1 there.
_EPSILON_CEILING = 1024.0
# Spawn key of the tie-breaking stream: a stream that can never coincide with
# np.random.default_rng(seed), from which the inclusion bits are usually drawn (a
# tie-break correlated with inclusion would be an invalid, leaking guess).
_TIE_BREAK_SPAWN_KEY = (0x71E,)

__all__ = [
    "CANARY_KINDS",
    "THREAT_MODELS",
    "OneRunAudit",
    "audit_from_scores",
    "audit_p_value",
    "default_guess_counts",
    "epsilon_lower_bound",
    "one_run_audit",
]


# ----------------------------------------------------------------------------- statistics


def _check_counts(num_canaries: Any, num_guesses: Any, num_correct: Any) -> Tuple[int, int, int]:
    """Validates m >= 1, 0 <= r <= m, 0 <= v <= r, all whole numbers."""
    values = []
    for name, value in (("num_canaries", num_canaries), ("num_guesses", num_guesses),
                        ("num_correct", num_correct)):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"`{name}` must be a whole number, got {value!r}.")
        values.append(int(value))
    m, r, v = values
    if m < 1:
        raise ValueError(f"`num_canaries` must be >= 1, got {m}.")
    if not 0 <= r <= m:
        raise ValueError(f"`num_guesses` must be in [0, num_canaries={m}], got {r}.")
    if not 0 <= v <= r:
        raise ValueError(f"`num_correct` must be in [0, num_guesses={r}], got {v}.")
    return m, r, v


def _check_delta(delta: Any) -> float:
    """delta in [0, 1)."""
    try:
        value = float(delta)
    except (TypeError, ValueError):
        raise ValueError(f"`delta` must be a number in [0, 1), got {delta!r}.") from None
    if isinstance(delta, bool) or not 0.0 <= value < 1.0:
        raise ValueError(f"`delta` must be a number in [0, 1), got {delta!r}.")
    return value


def _check_confidence(confidence: Any) -> float:
    """confidence in (0, 1) exclusive: 1 would need infinitely many canaries."""
    try:
        value = float(confidence)
    except (TypeError, ValueError):
        raise ValueError(f"`confidence` must be a number in (0, 1), got {confidence!r}.") from None
    if isinstance(confidence, bool) or not 0.0 < value < 1.0:
        raise ValueError(f"`confidence` must be a number in (0, 1), e.g. 0.95, got {confidence!r}.")
    return value


def _p_value(m: int, r: int, v: int, epsilon: float, delta: float, monotone: bool) -> float:
    """Theorem 5.2's bound on P[correct >= v]; `monotone` uses a majorant increasing in eps.

    With f(k) = P[Binomial(r, q) >= k] the bound is
        f(v) + c * max_i (f(v - i) - f(v)) / i,   c = 2 m delta, i = 1..v,
    and each term equals (1 - c/i) f(v) + (c/i) f(v - i). Every f(k) increases with q,
    so when c/i <= 1 the term increases with epsilon. For c/i > 1 the coefficient of
    f(v) is negative and the term can fall as epsilon grows; the majorant replaces
    (1 - c/i) by max(0, 1 - c/i), which keeps it a valid (larger) p-value that is
    increasing in epsilon everywhere, so bisecting it finds the one crossing.
    """
    if v == 0:
        return 1.0  # P[correct >= 0] = 1 under any hypothesis
    q = float(special.expit(epsilon))  # e^eps / (1 + e^eps), without overflow
    tail = float(stats.binom.sf(v - 1, r, q))  # f(v) = P[B >= v]
    c = 2.0 * m * delta
    if c == 0.0:
        return min(1.0, tail)
    # window[i - 1] = P[v - i <= B < v] = f(v - i) - f(v), summed from the top (k = v-1
    # down) so small upper-tail masses are not lost to cancellation against values near 1.
    pmf = stats.binom.pmf(np.arange(v - 1, -1, -1), r, q)
    window = np.cumsum(pmf)
    i = np.arange(1, v + 1, dtype=np.float64)
    if not monotone:
        return float(min(1.0, tail + c * np.max(window / i)))
    weight = c / i
    terms = np.maximum(0.0, 1.0 - weight) * tail + weight * (tail + window)
    return float(min(1.0, max(tail, np.max(terms))))


def audit_p_value(num_canaries: int, num_guesses: int, num_correct: int, epsilon: float,
                  delta: float) -> float:
    """Probability bound of `num_correct` or more correct guesses under (epsilon, delta)-DP.

    Steinke, Nasr and Jagielski (2023), Theorem 5.2: with m canaries each included with
    probability 1/2, r guesses and q = e^eps / (1 + e^eps), an (eps, delta)-DP training
    run gives
        P[correct >= v] <= P[Binomial(r, q) >= v]
                           + 2 m delta * max_{i=1..v} (1/i) P[v - i <= Binomial(r, q) < v].
    Returned clipped to [0, 1]. A small value rejects (eps, delta)-DP. It increases with
    epsilon (a weaker privacy claim is harder to reject) whenever 2 m delta <= 1; the
    delta term only adds to it.

    Args:
      num_canaries: m, the number of canaries (each in or out with probability 1/2).
      num_guesses: r, the guesses made (the rest abstained).
      num_correct: v, the correct guesses among them.
      epsilon: the epsilon under test, >= 0.
      delta: the delta under test, in [0, 1).
    """
    m, r, v = _check_counts(num_canaries, num_guesses, num_correct)
    epsilon = float(epsilon)
    if not epsilon >= 0.0:  # also rejects NaN
        raise ValueError(f"`epsilon` must be >= 0, got {epsilon!r}.")
    return _p_value(m, r, v, epsilon, _check_delta(delta), monotone=False)


def epsilon_lower_bound(num_canaries: int, num_guesses: int, num_correct: int, *,
                        delta: float, confidence: float) -> float:
    """Largest epsilon that r guesses with v correct reject at `confidence`, else 0.0.

    The bound is the largest eps whose `audit_p_value` is < 1 - confidence: with that
    confidence the run is not (eps', delta)-DP for any eps' below it. Found by
    expanding an upper end until the p-value reaches 1 - confidence, then bisecting to
    1e-6 (returned at the rejected end, so it never overstates). Returns 0.0 when even
    eps = 0 is not rejected (e.g. no more than half the guesses correct).

    When 2 m delta > 1 the exact p-value need not be monotone in eps; the search then
    uses a larger, monotone p-value (see `_p_value`), so the bound stays valid.
    """
    m, r, v = _check_counts(num_canaries, num_guesses, num_correct)
    delta = _check_delta(delta)
    alpha = 1.0 - _check_confidence(confidence)

    def rejected(eps: float) -> bool:
        return _p_value(m, r, v, eps, delta, monotone=True) < alpha

    if r == 0 or not rejected(0.0):
        return 0.0
    lo, hi = 0.0, 1.0
    while rejected(hi):
        lo, hi = hi, 2.0 * hi
        if hi > _EPSILON_CEILING:  # cannot happen for finite counts; a guard, not a result
            return float(lo)
    while hi - lo > _EPSILON_TOLERANCE:
        mid = 0.5 * (lo + hi)
        if rejected(mid):
            lo = mid
        else:
            hi = mid
    return float(lo)


def default_guess_counts(num_canaries: int) -> Tuple[int, ...]:
    """The guess counts r tried by default: m/10, m/5, m/2 and m, even, >= 2, deduplicated.

    Each r is rounded to the nearest even number (half the guesses "in", half "out"),
    at least 2 and at most m (the largest even number <= m).
    """
    m = int(num_canaries)
    if m < 2:
        raise ValueError(f"`num_canaries` must be >= 2 (one guess in, one out), got {m}.")
    largest = m - (m % 2)
    counts = []
    for fraction in DEFAULT_GUESS_FRACTIONS:
        r = 2 * int(round(fraction * m / 2.0))
        r = min(max(r, 2), largest)
        if r not in counts:
            counts.append(r)
    return tuple(counts)


def _check_guess_counts(guess_counts: Optional[Sequence[int]], m: int) -> Tuple[int, ...]:
    if guess_counts is None:
        return default_guess_counts(m)
    counts = []
    for r in guess_counts:
        if isinstance(r, (bool, np.bool_)) or not isinstance(r, (int, np.integer)):
            raise ValueError(f"`guess_counts` must hold whole numbers, got {r!r}.")
        r = int(r)
        if r < 2 or r > m or r % 2:
            raise ValueError(
                f"Each guess count must be even (as many 'in' as 'out' guesses) and in "
                f"[2, num_canaries={m}], got {r}."
            )
        if r not in counts:
            counts.append(r)
    if not counts:
        raise ValueError("`guess_counts` is empty: give at least one guess count.")
    return tuple(counts)


def _tie_break_rng(seed: Any) -> np.random.Generator:
    """A generator for tie-breaking, independent of np.random.default_rng(seed)."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=_TIE_BREAK_SPAWN_KEY))


# ----------------------------------------------------------------------------- result


@dataclasses.dataclass(frozen=True)
class OneRunAudit:
    """The outcome of a one-run audit.

    Attributes:
      epsilon_lower_bound: with probability >= `confidence` (over the canaries' coin
        flips and the training run) the run is not (eps, delta)-DP for any eps below
        this; 0.0 when the audit found no evidence (which does not mean privacy).
      num_canaries: m, canaries drawn (each included with probability 1/2).
      num_guesses: r of the guess count that gave the bound (the first tried if none did).
      num_correct: v, correct guesses among those r.
      num_included: canaries that were in the training run.
      threat_model: "blackbox" or "whitebox".
      canary_kind: "noise" or "mislabeled" (blackbox), None for whitebox.
      delta: the delta of the bound.
      confidence: joint confidence, covering every guess count tried (union bound).
      guess_counts_tried: the fixed guess counts r that were evaluated.
      results_per_guess_count: (r, v, bound at confidence 1 - (1 - c)/len) per count.
    """

    epsilon_lower_bound: float
    num_canaries: int
    num_guesses: int
    num_correct: int
    num_included: int
    threat_model: str
    canary_kind: Optional[str]
    delta: float
    confidence: float
    guess_counts_tried: Tuple[int, ...]
    results_per_guess_count: Tuple[Tuple[int, int, float], ...] = ()

    @property
    def description(self) -> str:
        """What the bound means, in words."""
        return (
            f"With confidence {self.confidence:.0%}, the training run is not "
            f"(eps, {self.delta:g})-DP for any eps below {self.epsilon_lower_bound:.4g} "
            f"({self.num_correct} of {self.num_guesses} guesses correct on "
            f"{self.num_canaries} {self.threat_model} canaries); this is a lower bound from "
            "one run, it proves nothing about the upper side, and 0 means the audit found "
            "no evidence, not that the run is private."
        )

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready dict of every field plus `description`."""
        out = jsonable(dataclasses.asdict(self))
        out["description"] = self.description
        return out


def audit_from_scores(
    scores: Any,
    included: Any,
    *,
    delta: float = 1e-5,
    confidence: float = 0.95,
    guess_counts: Optional[Sequence[int]] = None,
    seed: Union[int, np.random.Generator, None] = 0,
    threat_model: str = "blackbox",
    canary_kind: Optional[str] = None,
) -> OneRunAudit:
    """The audit's guessing and bound, from per-canary scores and the true inclusion bits.

    For each guess count r (fixed in advance, default `default_guess_counts(m)`), the
    r/2 highest scores are guessed "in", the r/2 lowest "out", the rest abstain; v is
    the number of correct guesses. Picking r after seeing the outcome is not free, so
    every r is tested at confidence 1 - (1 - confidence) / len(guess_counts) and the
    best bound is reported (a union bound: the joint confidence is `confidence`).

    Args:
      scores: float array (m,), higher = more likely included. Must not depend on the
        inclusion bits except through the training run.
      included: bool array (m,), each True independently with probability 1/2.
      delta, confidence: of the bound; delta in [0, 1), confidence in (0, 1).
      guess_counts: even numbers in [2, m] to try, or None for the default set.
      seed: seed (or Generator) for breaking score ties at random, so tied canaries
        are guessed independently of inclusion (a stream distinct from
        np.random.default_rng(seed)).
      threat_model, canary_kind: recorded in the result.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    included = np.asarray(included)
    if included.dtype != np.bool_:
        if not np.all((included == 0) | (included == 1)):
            raise ValueError("`included` must be booleans (or 0/1), one per canary.")
        included = included.astype(bool)
    included = included.reshape(-1)
    m = len(included)
    if m < 2:
        raise ValueError(f"`num_canaries` must be >= 2 (one guess in, one out), got {m}.")
    if scores.shape != (m,):
        raise ValueError(f"Got {scores.size} scores for {m} canaries: give one score per canary.")
    if not np.all(np.isfinite(scores)):
        raise ValueError("The canary scores contain NaN or infinite values.")
    delta = _check_delta(delta)
    confidence = _check_confidence(confidence)
    counts = _check_guess_counts(guess_counts, m)
    check_choice("threat_model", threat_model, THREAT_MODELS)

    # Ascending by score, ties in a random order independent of inclusion.
    tie_break = _tie_break_rng(seed).random(m)
    order = np.lexsort((tie_break, scores))
    sorted_in = included[order]
    per_test_confidence = 1.0 - (1.0 - confidence) / len(counts)
    results = []
    for r in counts:
        k = r // 2
        correct = int(np.sum(sorted_in[m - k:]) + np.sum(~sorted_in[:k]))
        bound = epsilon_lower_bound(m, r, correct, delta=delta, confidence=per_test_confidence)
        results.append((r, correct, bound))
    best = max(results, key=lambda item: item[2])  # the first one on ties (all zero: m/10)
    return OneRunAudit(
        epsilon_lower_bound=best[2],
        num_canaries=m,
        num_guesses=best[0],
        num_correct=best[1],
        num_included=int(included.sum()),
        threat_model=threat_model,
        canary_kind=canary_kind,
        delta=delta,
        confidence=confidence,
        guess_counts_tried=counts,
        results_per_guess_count=tuple(results),
    )


# ----------------------------------------------------------------------------- driver


def _label_format(y: np.ndarray) -> Tuple[bool, int, np.ndarray]:
    """(one_hot, num_classes, class indices) of labels y: integers (n,), (n, 1) or one-hot."""
    if y.ndim == 2 and y.shape[1] > 1:
        if not (np.all((y == 0) | (y == 1)) and np.all(y.sum(axis=1) == 1)):
            raise ValueError(
                f"The labels have shape {y.shape} but are not one-hot; give class indices "
                "(n,) or one-hot rows."
            )
        return True, int(y.shape[1]), np.argmax(y, axis=1).astype(np.int64)
    flat = y.reshape(len(y), -1)
    if flat.shape[1] != 1:
        raise ValueError(f"The labels have shape {y.shape}; expected (n,), (n, 1) or one-hot.")
    flat = flat[:, 0]
    if flat.dtype.kind not in "iub" and not (
        flat.dtype.kind == "f" and np.all(np.isfinite(flat)) and np.all(flat == np.round(flat))
    ):
        raise ValueError(f"The labels must be whole class indices, got dtype {y.dtype}.")
    indices = flat.astype(np.int64)
    if len(indices) and indices.min() < 0:
        raise ValueError("The labels must be class indices >= 0.")
    return False, (int(indices.max()) + 1 if len(indices) else 0), indices


def _labels_like(indices: np.ndarray, y: np.ndarray, one_hot: bool, num_classes: int) -> np.ndarray:
    """Class indices written in the format (and dtype) of the pool's labels y."""
    if one_hot:
        return np.eye(num_classes, dtype=y.dtype)[indices]
    return indices.astype(y.dtype).reshape((len(indices),) + y.shape[1:])


def _noise_inputs(rng: np.random.Generator, x: np.ndarray, m: int) -> np.ndarray:
    """m inputs uniform over [min(x), max(x)], with x's per-example shape and dtype."""
    low, high = x.min(), x.max()
    shape = (m,) + x.shape[1:]
    if x.dtype.kind in "iu":
        return rng.integers(int(low), int(high), size=shape, endpoint=True).astype(x.dtype)
    if x.dtype.kind == "b":
        return rng.random(shape) < 0.5
    return rng.uniform(float(low), float(high), size=shape).astype(x.dtype)


def _accepts_gradient_canaries(train_fn: Callable, data: Any, seed: int,
                               included: np.ndarray) -> bool:
    """Whether train_fn's signature takes `gradient_canaries=` (True if it cannot be read)."""
    try:
        signature = inspect.signature(train_fn)
    except (TypeError, ValueError):  # builtins and some C callables have no signature
        return True
    try:
        signature.bind(data, seed, gradient_canaries=included)
    except TypeError:
        return False
    return True


_WHITEBOX_HELP = (
    "The white-box audit needs a train_fn that passes `gradient_canaries` to a tfdp DP "
    "optimizer and returns the model trained with it (so that "
    "`model.optimizer.gradient_canary_scores()` exists); No-DP training and the methods "
    "without a noise query have no mechanism to audit this way."
)


def one_run_audit(
    train_fn: Callable[..., Any],
    data: Any,
    *,
    num_canaries: int,
    threat_model: str = "blackbox",
    delta: float = 1e-5,
    confidence: float = 0.95,
    seed: int = 0,
    canary_kind: str = "noise",
    from_logits: Optional[bool] = None,
    guess_counts: Optional[Sequence[int]] = None,
    log: Optional[Callable[[str], Any]] = print,
) -> OneRunAudit:
    """Audits one training run with m canaries: a lower bound on its epsilon.

    Each of the m canaries is included independently with probability 1/2
    (`included = np.random.default_rng(seed).random(m) < 0.5`), the model is trained
    ONCE, every canary is scored, and `audit_from_scores` turns the guesses into a bound
    (Steinke, Nasr and Jagielski 2023, Theorem 5.2). The guess counts r are a fixed set
    (default m/10, m/5, m/2, m) chosen before looking, each tested at confidence
    1 - (1 - confidence)/len(set) (union bound); the best bound is reported with the r
    and v that gave it.

    Threat models:
      "blackbox": canaries are training examples. canary_kind="noise": inputs uniform in
        [min(x), max(x)] with uniformly random labels; "mislabeled": m examples removed
        from the pool (never trained on except as canaries) with a random wrong label.
        The included canaries are shuffled into the pool and
        `model = train_fn((x_train, y_train), seed)` is called; a canary's score is the
        model's logit-scaled confidence in its label.
      "whitebox": canaries are gradients. `model = train_fn((x, y), seed,
        gradient_canaries=included)` trains on the whole pool while the DP optimizer adds
        each included canary's gradient and accumulates scores, read from
        `model.optimizer.gradient_canary_scores()`.

    Args:
      train_fn: trains a model on `(x, y)` numpy arrays with the given seed and returns
        it (a Keras model or a callable `model(x, training=False)` giving logits or
        probabilities; for whitebox, an object with `.optimizer.gradient_canary_scores()`).
      data: `(x, y)` numpy arrays (the training pool) or a tfdp.data.Dataset (its
        x_train, y_train). Labels: class indices or one-hot rows.
      num_canaries: m >= 2. More canaries give a tighter bound (and, blackbox, more
        extra training examples).
      threat_model: "blackbox" or "whitebox".
      delta: the delta of the bound, in [0, 1) (usually the run's accounting delta).
      confidence: in (0, 1), joint over all guess counts tried.
      seed: seeds the canaries, their inclusion, the shuffle, tie-breaking, and train_fn.
      canary_kind: "noise" or "mislabeled" (blackbox only; checked but unused for whitebox).
      from_logits: whether the model outputs logits (None detects), blackbox only.
      guess_counts: even guess counts to try instead of the default set.
      log: called with progress messages (None for silence).

    Raises:
      ValueError: on bad arguments, or (whitebox) a train_fn/model without the
        gradient-canary hooks.
    """
    if isinstance(num_canaries, (bool, np.bool_)) or not isinstance(
        num_canaries, (int, np.integer)
    ):
        raise ValueError(f"`num_canaries` must be a whole number >= 2, got {num_canaries!r}.")
    m = int(num_canaries)
    if m < 2:
        raise ValueError(f"`num_canaries` must be >= 2 (one guess in, one out), got {m}.")
    check_choice("threat_model", threat_model, THREAT_MODELS)
    check_choice("canary_kind", canary_kind, CANARY_KINDS)  # a typo is an error even if unused
    delta = _check_delta(delta)
    confidence = _check_confidence(confidence)
    counts = _check_guess_counts(guess_counts, m)
    if not callable(train_fn):
        raise ValueError(f"`train_fn` must be callable, got {type(train_fn).__name__}.")
    say = log if log is not None else (lambda message: None)
    x, y = pool_arrays(data)

    rng = np.random.default_rng(seed)
    included = rng.random(m) < 0.5
    tie_break = _tie_break_rng(seed)
    num_included = int(included.sum())

    if threat_model == "whitebox":
        if not _accepts_gradient_canaries(train_fn, (x, y), seed, included):
            raise ValueError(f"`train_fn` does not accept `gradient_canaries`. {_WHITEBOX_HELP}")
        say(f"One-run audit (whitebox): {m} gradient canaries, {num_included} included; "
            f"training on {len(x)} examples.")
        model = train_fn((x, y), seed, gradient_canaries=included.copy())
        read_scores = getattr(getattr(model, "optimizer", None), "gradient_canary_scores", None)
        if not callable(read_scores):
            raise ValueError(
                f"The model train_fn returned has no `optimizer.gradient_canary_scores()`. "
                f"{_WHITEBOX_HELP}"
            )
        scores = np.asarray(read_scores(), dtype=np.float64).reshape(-1)
        if scores.shape != (m,):
            raise ValueError(
                f"`gradient_canary_scores()` returned {scores.size} scores for {m} canaries."
            )
        result_kind = None
    else:
        one_hot, num_classes, label_indices = _label_format(y)
        if num_classes < 2:
            raise ValueError(
                f"The labels have {num_classes} class(es); the canaries need at least 2."
            )
        if canary_kind == "noise":
            if len(x) == 0:
                raise ValueError("The training pool is empty.")
            canary_x = _noise_inputs(rng, x, m)
            canary_labels = rng.integers(0, num_classes, size=m)
            pool_x, pool_y = x, y
        else:
            if m >= len(x):
                raise ValueError(
                    f"canary_kind='mislabeled' takes the canaries out of the pool, so "
                    f"`num_canaries` ({m}) must be below the pool size ({len(x)})."
                )
            chosen = rng.choice(len(x), size=m, replace=False)
            canary_x = x[chosen]
            # A uniformly random class among the other num_classes - 1.
            shift = rng.integers(1, num_classes, size=m)
            canary_labels = (label_indices[chosen] + shift) % num_classes
            keep = np.ones(len(x), dtype=bool)
            keep[chosen] = False
            pool_x, pool_y = x[keep], y[keep]
        canary_y = _labels_like(canary_labels, y, one_hot, num_classes)
        train_x = np.concatenate([pool_x, canary_x[included]])
        train_y = np.concatenate([pool_y, canary_y[included]])
        # Shuffled so the canaries are not all at the end (an ordered trainer, e.g. without
        # shuffling or with a final partial batch, would treat them differently).
        permutation = rng.permutation(len(train_x))
        train_x, train_y = train_x[permutation], train_y[permutation]
        say(f"One-run audit (blackbox, {canary_kind} canaries): {num_included} of {m} canaries "
            f"included; training on {len(train_x)} examples.")
        model = train_fn((train_x, train_y), seed)
        scores = model_logit_confidence(model, (canary_x, canary_y), from_logits=from_logits)
        result_kind = canary_kind

    result = audit_from_scores(
        scores,
        included,
        delta=delta,
        confidence=confidence,
        guess_counts=counts,
        seed=tie_break,
        threat_model=threat_model,
        canary_kind=result_kind,
    )
    say(result.description)
    return result
