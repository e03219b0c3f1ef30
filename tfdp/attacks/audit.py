"""Audit: is the leakage the attacks found consistent with the epsilon the accountant claims?

(epsilon, delta)-DP bounds every membership test: for any event E (e.g. "score >= t"),
P[E | member] <= exp(epsilon) P[E | non-member] + delta, and the same with the roles
swapped. So for an attack threshold with true/false positive rates TPR, FPR,
epsilon >= log((TPR - delta) / FPR) (and likewise for the complements TNR, FNR).
The audit turns the attacks' observed rates into such a bound with statistical
confidence and compares it with the claim.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
from scipy import stats

from tfdp.attacks.attack_report import AttackReport


@dataclasses.dataclass(frozen=True)
class AuditResult:
    """The audit verdict.

    Attributes:
      consistent: False when the empirical lower bound is above a finite claimed
        epsilon (a violation); True otherwise (including when the claim is
        epsilon = inf, which nothing can violate).
      message: the verdict in words, with the numbers and how the bound is defined.
      claimed_epsilon, delta: the accountant's claim.
      empirical_epsilon_lower_bound: the delta-aware lower bound used for the
        verdict (see `audit`), >= 0.
      library_epsilon_lower_bound: TF Privacy's bound from the report (delta = 0,
        95% per threshold, no multiple-comparison correction), for reference.
      confidence: joint confidence of `empirical_epsilon_lower_bound`.
      attack: the attack giving the largest bound (None if no bound above 0).
      num_tests: threshold tests the Bonferroni correction covers.
      epsilon_noisy_steps_only: the paper's convention value, when the claim has one.
    """

    consistent: bool
    message: str
    claimed_epsilon: float
    delta: float
    empirical_epsilon_lower_bound: float
    library_epsilon_lower_bound: float
    confidence: float
    attack: Optional[str]
    num_tests: int
    epsilon_noisy_steps_only: Optional[float] = None

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready dict (infinite epsilons become the string 'inf')."""
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, float) and not math.isfinite(value):
                out[key] = str(value)
        return out


def _read_claim(privacy_result: Any) -> Tuple[float, float, Optional[float]]:
    """(epsilon, delta, epsilon_noisy_steps_only) from a PrivacyResult-like object or a dict."""
    help_text = (
        "Pass the accountant's PrivacyResult, any object with `.epsilon` and `.delta`, or a "
        "dict with keys 'epsilon' and 'delta'."
    )

    def get(key: str) -> Any:
        if isinstance(privacy_result, Mapping):
            return privacy_result.get(key)
        return getattr(privacy_result, key, None)

    raw_epsilon, raw_delta = get("epsilon"), get("delta")
    if raw_epsilon is None or raw_delta is None:
        raise ValueError(f"`privacy_result` has no epsilon and delta. {help_text}")
    try:
        epsilon, delta = float(raw_epsilon), float(raw_delta)
    except (TypeError, ValueError):
        raise ValueError(
            f"`privacy_result` epsilon {raw_epsilon!r} / delta {raw_delta!r} are not numbers. {help_text}"
        ) from None
    if math.isnan(epsilon) or epsilon < 0:
        raise ValueError(f"The claimed epsilon must be >= 0 (or inf), got {raw_epsilon!r}.")
    if not 0.0 <= delta < 1.0:
        raise ValueError(f"The claimed delta must be in [0, 1), got {raw_delta!r}.")
    noisy_only = get("epsilon_noisy_steps_only")
    try:
        noisy_only = None if noisy_only is None else float(noisy_only)
    except (TypeError, ValueError):
        noisy_only = None
    return epsilon, delta, noisy_only


def _counts(members: np.ndarray, nonmembers: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(TP, FP) for the rule "score >= t" at every distinct score t."""
    thresholds = np.unique(np.concatenate([members, nonmembers]))
    tp = members.size - np.searchsorted(np.sort(members), thresholds, side="left")
    fp = nonmembers.size - np.searchsorted(np.sort(nonmembers), thresholds, side="left")
    return tp, fp


def _cp_lower(k: np.ndarray, n: int, alpha: float) -> np.ndarray:
    """One-sided Clopper-Pearson lower confidence bound on a rate (k successes of n)."""
    k = np.asarray(k, dtype=np.float64)
    bound = stats.beta.ppf(alpha, np.maximum(k, 1e-12), n - k + 1)
    return np.where(k == 0, 0.0, bound)


def _cp_upper(k: np.ndarray, n: int, alpha: float) -> np.ndarray:
    """One-sided Clopper-Pearson upper confidence bound on a rate (k successes of n)."""
    k = np.asarray(k, dtype=np.float64)
    bound = stats.beta.ppf(1.0 - alpha, k + 1, np.maximum(n - k, 1e-12))
    return np.where(k == n, 1.0, bound)


def _bound_for_counts(
    tp: np.ndarray, fp: np.ndarray, n_members: int, n_nonmembers: int, delta: float, alpha: float
) -> float:
    """max over thresholds of the four (rate_low - delta) / other_rate_up log-ratios; -inf if none > 0."""
    tn, fn = n_nonmembers - fp, n_members - tp
    best = -math.inf
    # (numerator count, its size, denominator count, its size): TPR/FPR, FPR/TPR, TNR/FNR, FNR/TNR.
    for num, num_n, den, den_n in (
        (tp, n_members, fp, n_nonmembers),
        (fp, n_nonmembers, tp, n_members),
        (tn, n_nonmembers, fn, n_members),
        (fn, n_members, tn, n_nonmembers),
    ):
        numerator = _cp_lower(num, num_n, alpha) - delta
        denominator = _cp_upper(den, den_n, alpha)
        valid = numerator > 0
        if np.any(valid):
            best = max(best, float(np.max(np.log(numerator[valid] / denominator[valid]))))
    return best


def delta_epsilon_lower_bound(
    membership_scores: Mapping[str, Tuple[Sequence[float], Sequence[float]]],
    *,
    delta: float,
    confidence: float = 0.95,
) -> Tuple[float, Optional[str], int]:
    """Lower bound on epsilon for an (epsilon, delta) claim from attack scores.

    For each attack and every distinct score t, the rule "member iff score >= t"
    has counts TP, FP (and TN, FN). With one-sided Clopper-Pearson bounds at level
    alpha' on each rate, epsilon >= log((TPR_low - delta) / FPR_up), and the same
    for FPR/TPR, TNR/FNR and FNR/TNR. alpha' = (1 - confidence) / (2 m) over all m
    = 4 x (number of thresholds) tests of all attacks (Bonferroni), so the largest
    value holds with `confidence` jointly. It treats every example's score as an
    independent draw, membership assigned at random (the usual auditing
    assumption; one trained model makes this approximate).

    Returns:
      (bound floored at 0, attack giving it or None, m).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"`confidence` must be in (0, 1), got {confidence!r}.")
    counted = {}
    for name, (members, nonmembers) in membership_scores.items():
        members = np.asarray(members, dtype=np.float64).ravel()
        nonmembers = np.asarray(nonmembers, dtype=np.float64).ravel()
        if members.size == 0 or nonmembers.size == 0:
            continue
        if not (np.all(np.isfinite(members)) and np.all(np.isfinite(nonmembers))):
            raise ValueError(f"The membership scores of attack {name!r} contain NaN or inf.")
        counted[name] = (_counts(members, nonmembers), members.size, nonmembers.size)
    num_tests = 4 * sum(tp.size for (tp, _), _, _ in counted.values())
    if num_tests == 0:
        return 0.0, None, 0
    alpha = (1.0 - confidence) / (2 * num_tests)
    best, best_name = 0.0, None
    for name, ((tp, fp), n_members, n_nonmembers) in counted.items():
        bound = _bound_for_counts(tp, fp, n_members, n_nonmembers, delta, alpha)
        if bound > best:
            best, best_name = bound, name
    return best, best_name, num_tests


def audit(attack_report: AttackReport, privacy_result: Any, *, confidence: float = 0.95) -> AuditResult:
    """Sets the empirical epsilon lower bound beside the accountant's epsilon.

    The verdict uses a delta-aware lower bound computed from the report's attack
    scores on the entire data set (see `delta_epsilon_lower_bound`): it holds with
    `confidence` jointly over all attacks and thresholds. A bound above a finite
    claimed epsilon is a violation (`consistent=False`). A claim of epsilon = inf
    (no formal guarantee) cannot be violated; the message says so and reports the
    empirical bound. TF Privacy's own bound (delta = 0, 95% per threshold,
    uncorrected, so optimistic) is reported beside it but not used for the verdict.
    A consistent audit does not prove the claim: attacks only show the leakage
    they find.

    Args:
      attack_report: the `AttackReport` of `membership_inference`.
      privacy_result: the accountant's PrivacyResult, any object with `.epsilon`
        and `.delta`, or a dict with those keys (`epsilon_noisy_steps_only` is
        used in the message when present).
      confidence: joint confidence of the empirical bound.

    Returns:
      An `AuditResult`.
    """
    if not isinstance(attack_report, AttackReport):
        raise ValueError(
            "`attack_report` must be the AttackReport returned by "
            f"tfdp.attacks.membership_inference, got {type(attack_report).__name__}."
        )
    epsilon, delta, noisy_only = _read_claim(privacy_result)
    bound, attack, num_tests = delta_epsilon_lower_bound(
        attack_report.membership_scores, delta=delta, confidence=confidence
    )
    library_bound = attack_report.epsilon_lower_bound
    where = f" (attack: {attack})" if attack else ""
    empirical = (
        f"the attacks show epsilon >= {bound:.3f}{where} at delta = {delta:.3g}, with "
        f"{confidence:.0%} confidence"
    )
    definition = (
        f"Bound: for every threshold of every attack on the entire data set "
        f"({attack_report.n_members} members, {attack_report.n_nonmembers} non-members), "
        "log((TPR_low - delta) / FPR_up) and the symmetric ratios, with one-sided "
        f"Clopper-Pearson bounds Bonferroni-corrected over {num_tests} tests so the maximum "
        f"holds with {confidence:.0%} confidence jointly; it treats the examples' scores as "
        "independent draws with membership assigned at random. TF Privacy's own bound is "
        f"{library_bound:.3f} (Bailey's method, 95% per threshold, delta = 0, largest over "
        "thresholds without correction, so optimistic); it is reported but not used for the "
        "verdict."
    )
    if math.isinf(epsilon):
        consistent = True
        verdict = (
            "No formal claim to check: the accountant reports epsilon = inf (no formal DP "
            f"guarantee). Empirically, {empirical}."
        )
        if noisy_only is not None and math.isfinite(noisy_only):
            relation = "above" if bound > noisy_only else "not above"
            verdict += (
                f" The noisy-steps-only convention value epsilon = {noisy_only:.3f} is not a "
                f"guarantee; the empirical bound is {relation} it."
            )
    elif bound > epsilon:
        consistent = False
        verdict = (
            f"VIOLATION: {empirical}, above the claimed epsilon = {epsilon:.3f} (delta = "
            f"{delta:.3g}). The claimed guarantee cannot hold for this model as evaluated: "
            "check the accounting (sampling rate, steps, noise multiplier, microbatching) and "
            "that training really used the DP optimizer on these members."
        )
    else:
        consistent = True
        verdict = (
            f"Consistent: {empirical}, which does not exceed the claimed epsilon = "
            f"{epsilon:.3f} (delta = {delta:.3g}). This does not prove the claim: attacks "
            "only show the leakage they find."
        )
        if library_bound > epsilon:
            verdict += (
                f" TF Privacy's uncorrected bound ({library_bound:.3f}) is above the claim, but "
                "after accounting for delta and for choosing the best of many thresholds the "
                "excess is not significant."
            )
    return AuditResult(
        consistent=consistent,
        message=f"{verdict} {definition}",
        claimed_epsilon=epsilon,
        delta=delta,
        empirical_epsilon_lower_bound=bound,
        library_epsilon_lower_bound=library_bound,
        confidence=confidence,
        attack=attack,
        num_tests=num_tests,
        epsilon_noisy_steps_only=noisy_only,
    )
