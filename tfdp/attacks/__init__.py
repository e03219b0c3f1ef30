"""Membership-inference evaluation, utility metrics and a privacy audit.

    report = tfdp.attacks.membership_inference(model, (x_train, y_train), (x_test, y_test))
    report.auc, report.advantage, report.ppv, report.epsilon_lower_bound, report.per_attack
    report.plot("mia.png"); report.to_dict()
    tfdp.attacks.utility_metrics(model, (x_test, y_test))   # accuracy, precision, recall, f1, auc
    tfdp.attacks.audit(report, privacy_result)              # .consistent, .message

The attacks are TF Privacy's membership-inference attack library (0.8.12).
"""

from tfdp.attacks.attack_report import EPSILON_LOWER_BOUND_DEFINITION, AttackReport
from tfdp.attacks.audit import AuditResult, audit, delta_epsilon_lower_bound
from tfdp.attacks.membership import (
    DEFAULT_ATTACK_TYPES,
    THRESHOLD_ATTACKS,
    TRAINED_ATTACKS,
    membership_inference,
    membership_inference_from_outputs,
)
from tfdp.attacks.utility import utility_metrics

__all__ = [
    "AttackReport",
    "AuditResult",
    "DEFAULT_ATTACK_TYPES",
    "EPSILON_LOWER_BOUND_DEFINITION",
    "THRESHOLD_ATTACKS",
    "TRAINED_ATTACKS",
    "audit",
    "delta_epsilon_lower_bound",
    "membership_inference",
    "membership_inference_from_outputs",
    "utility_metrics",
]
