"""Membership-inference evaluation, utility metrics and a privacy audit.

    report = tfdp.attacks.membership_inference(model, (x_train, y_train), (x_test, y_test))
    report.auc, report.advantage, report.ppv, report.epsilon_lower_bound, report.per_attack
    report.plot("mia.png"); report.to_dict()
    tfdp.attacks.utility_metrics(model, (x_test, y_test))   # accuracy, precision, recall, f1, auc
    tfdp.attacks.audit(report, privacy_result)              # .consistent, .message
    tfdp.attacks.lira(train_fn, (x, y), num_shadow=16)      # .auc, .tpr_at_fpr(0.001), .plot
    tfdp.attacks.one_run_audit(train_fn, (x, y), num_canaries=1000,
                               threat_model="whitebox")      # .epsilon_lower_bound

The attacks are TF Privacy's membership-inference attack library (0.8.12), including its
LiRA scoring (`advanced_mia`), and the one-run audit of Steinke, Nasr and Jagielski (2023).
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
from tfdp.attacks.lira import LiraReport, lira
from tfdp.attacks.one_run_audit import OneRunAudit, audit_p_value, epsilon_lower_bound, one_run_audit
from tfdp.attacks.roc_plot import plot_log_roc
from tfdp.attacks.utility import utility_metrics

__all__ = [
    "AttackReport",
    "AuditResult",
    "DEFAULT_ATTACK_TYPES",
    "EPSILON_LOWER_BOUND_DEFINITION",
    "LiraReport",
    "OneRunAudit",
    "THRESHOLD_ATTACKS",
    "TRAINED_ATTACKS",
    "audit",
    "audit_p_value",
    "delta_epsilon_lower_bound",
    "epsilon_lower_bound",
    "lira",
    "membership_inference",
    "membership_inference_from_outputs",
    "one_run_audit",
    "plot_log_roc",
    "utility_metrics",
]
