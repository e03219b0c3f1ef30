"""tfdp.attacks.audit: flags a planted violation, passes consistent claims, explains itself."""

import math
import types

import numpy as np
import pytest

from tfdp import attacks


def _report(member_logits, nonmember_logits, member_labels=None, nonmember_labels=None):
    """Loss-threshold report on one-logit binary outputs (label 1 unless given)."""
    if member_labels is None:
        member_labels = np.ones(len(member_logits), dtype=int)
    if nonmember_labels is None:
        nonmember_labels = np.ones(len(nonmember_logits), dtype=int)
    return attacks.membership_inference_from_outputs(
        member_logits,
        member_labels,
        nonmember_logits,
        nonmember_labels,
        attack_types=["threshold_attack"],
        slicing=None,
        from_logits=True,
    )


N_MEMBERS, N_NONMEMBERS = 120, 180


@pytest.fixture(scope="module")
def separated_report():
    """Every member has a lower loss than every non-member: maximal leakage for this size."""
    rng = np.random.default_rng(7)
    members = rng.uniform(5.0, 10.0, N_MEMBERS)  # confident and right: tiny, distinct losses
    nonmembers = rng.uniform(-10.0, -5.0, N_NONMEMBERS)  # confident and wrong: large losses
    return _report(members, nonmembers)


def _perfect_split_bound(n_members, n_nonmembers, delta, confidence, num_tests):
    """Closed form of the audit bound when one threshold separates the groups exactly.

    At that threshold TP = n_members and FP = 0. One-sided Clopper-Pearson bounds at
    level a: lower(k = n) = a ** (1 / n), upper(k = 0) = 1 - a ** (1 / n). The bound is
    the larger of log((TPR_low - delta) / FPR_up) and log((TNR_low - delta) / FNR_up).
    """
    a = (1 - confidence) / (2 * num_tests)
    tpr_low, fpr_up = a ** (1 / n_members), 1 - a ** (1 / n_nonmembers)
    tnr_low, fnr_up = a ** (1 / n_nonmembers), 1 - a ** (1 / n_members)
    return max(math.log((tpr_low - delta) / fpr_up), math.log((tnr_low - delta) / fnr_up))


def test_planted_violation_is_flagged_with_the_closed_form_bound(separated_report):
    result = attacks.audit(separated_report, {"epsilon": 1.0, "delta": 1e-5})
    assert not result.consistent
    assert "VIOLATION" in result.message
    # One threshold per distinct score, four ratios each.
    assert result.num_tests == 4 * (N_MEMBERS + N_NONMEMBERS)
    expected = _perfect_split_bound(N_MEMBERS, N_NONMEMBERS, 1e-5, 0.95, result.num_tests)
    assert result.empirical_epsilon_lower_bound == pytest.approx(expected, rel=1e-9)
    assert result.empirical_epsilon_lower_bound > 1.0
    assert f"{expected:.3f}" in result.message
    assert result.attack == "threshold_attack"
    # The library's own (delta = 0, uncorrected) bound is reported beside it.
    assert result.library_epsilon_lower_bound == pytest.approx(separated_report.epsilon_lower_bound)


def test_consistent_claim_passes_and_says_it_proves_nothing(separated_report):
    result = attacks.audit(separated_report, {"epsilon": 10.0, "delta": 1e-5})
    assert result.consistent
    assert result.message.startswith("Consistent")
    assert "does not prove" in result.message


def test_delta_lowers_the_bound(separated_report):
    small = attacks.audit(separated_report, {"epsilon": 10.0, "delta": 1e-5})
    large = attacks.audit(separated_report, {"epsilon": 10.0, "delta": 0.5})
    expected = _perfect_split_bound(N_MEMBERS, N_NONMEMBERS, 0.5, 0.95, large.num_tests)
    assert large.empirical_epsilon_lower_bound == pytest.approx(expected, rel=1e-9)
    assert large.empirical_epsilon_lower_bound < small.empirical_epsilon_lower_bound


def test_higher_confidence_gives_a_lower_bound(separated_report):
    at_95 = attacks.audit(separated_report, {"epsilon": 10.0, "delta": 1e-5})
    at_999 = attacks.audit(separated_report, {"epsilon": 10.0, "delta": 1e-5}, confidence=0.999)
    assert at_999.empirical_epsilon_lower_bound < at_95.empirical_epsilon_lower_bound


def test_no_leakage_is_consistent_even_where_the_uncorrected_bound_exceeds_the_claim():
    rng = np.random.default_rng(3)
    members, nonmembers = rng.normal(size=400), rng.normal(size=400)
    labels_m, labels_n = rng.integers(0, 2, 400), rng.integers(0, 2, 400)
    report = _report(members, nonmembers, labels_m, labels_n)
    claim = 0.5 * report.epsilon_lower_bound  # below TF Privacy's optimistic bound
    assert report.epsilon_lower_bound > 0  # the uncorrected bound is above 0 without leakage
    result = attacks.audit(report, {"epsilon": claim, "delta": 1e-5})
    assert result.consistent
    assert result.empirical_epsilon_lower_bound == 0.0
    assert "not significant" in result.message


def test_infinite_epsilon_has_no_formal_claim_and_reports_the_bound(separated_report):
    claim = types.SimpleNamespace(epsilon=math.inf, delta=1e-5, epsilon_noisy_steps_only=0.4)
    result = attacks.audit(separated_report, claim)
    assert result.consistent
    assert "No formal claim to check" in result.message
    assert f"{result.empirical_epsilon_lower_bound:.3f}" in result.message
    assert "not a guarantee" in result.message and "above it" in result.message
    assert result.to_dict()["claimed_epsilon"] == "inf"


def test_accepts_objects_with_epsilon_and_delta(separated_report):
    class PrivacyResultLike:
        epsilon = 1.0
        delta = 1e-5

    by_object = attacks.audit(separated_report, PrivacyResultLike())
    by_dict = attacks.audit(separated_report, {"epsilon": 1.0, "delta": 1e-5})
    assert by_object.consistent == by_dict.consistent
    assert by_object.empirical_epsilon_lower_bound == by_dict.empirical_epsilon_lower_bound


@pytest.mark.parametrize(
    "claim, match",
    [
        ({"epsilon": 1.0}, "epsilon and delta"),
        ({"delta": 1e-5}, "epsilon and delta"),
        ({"epsilon": -1.0, "delta": 1e-5}, "epsilon must be >= 0"),
        ({"epsilon": float("nan"), "delta": 1e-5}, "epsilon must be >= 0"),
        ({"epsilon": 1.0, "delta": 1.0}, r"delta must be in \[0, 1\)"),
        ({"epsilon": 1.0, "delta": -0.1}, r"delta must be in \[0, 1\)"),
        ({"epsilon": "one", "delta": 1e-5}, "not numbers"),
        (object(), "epsilon and delta"),
    ],
)
def test_bad_claims_raise(separated_report, claim, match):
    with pytest.raises(ValueError, match=match):
        attacks.audit(separated_report, claim)


def test_bad_report_and_confidence_raise(separated_report):
    with pytest.raises(ValueError, match="AttackReport"):
        attacks.audit(separated_report.to_dict(), {"epsilon": 1.0, "delta": 1e-5})
    with pytest.raises(ValueError, match="confidence"):
        attacks.audit(separated_report, {"epsilon": 1.0, "delta": 1e-5}, confidence=1.0)
