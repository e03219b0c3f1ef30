"""A run whose training diverges reports nan utility and keeps its privacy record.

(DP-SGD stops at the first non-finite gradient, `on_nonfinite="raise"`; the methods that
train with an ordinary optimizer, No-DP included, can end with NaN weights.)"""

import math

from tfdp import run


def test_a_diverged_run_reports_nan_utility_and_its_epsilon():
    config = run.RunConfig(mechanism="residual_perturbation", gamma=0.5, epochs=1, batch_size=64,
                           learning_rate=3e38, max_train_examples=200,
                           attack_types=("threshold",))
    lines = []
    result = run.train_and_evaluate(config, log=lines.append)
    assert any("diverged" in line for line in lines)
    assert math.isnan(result.utility["accuracy"])
    assert result.attack_report is None  # nothing to attack
    assert result.privacy.epsilon == math.inf and "Residual" in result.method
    assert result.ledger["steps"] == 4  # the steps taken are still counted
