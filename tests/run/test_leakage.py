"""LiRA and the one-run audits of a method, trained the method's own way (tfdp.run.leakage)."""

import math

import numpy as np
import pytest

import tfdp
from tfdp.run.leakage import (
    LEAKAGE_COLUMNS,
    LeakageConfig,
    check_bounds,
    measure_leakage,
    method_train_fn,
)
from tfdp.run.recipe import recipe_config


@pytest.fixture(scope="module")
def data():
    return tfdp.data.load_dataset("digits").subset(200, 60, seed=0)


def _config(**overrides):
    # The attacks' machinery does not depend on the model: the recipe's linear model without
    # the public prior's three CNNs keeps these dozens of trainings quick.
    settings = dict(mechanism="gaussian", target_epsilon=2.0, epochs=2, batch_size=32,
                    model="normalized_linear")
    settings.update(overrides)
    return recipe_config(**settings)


def test_train_fn_trains_the_method_on_the_given_examples(data):
    train_fn = method_train_fn(_config(), data)
    x, y = data.x_train[:100], data.y_train[:100]
    included = np.arange(40) % 2 == 0
    model = train_fn((x, y), 3, gradient_canaries=included)
    optimizer = model.optimizer
    # Calibrated for the 100 examples it saw (4 steps per epoch), not the data set's 200.
    assert optimizer.noisy_steps.numpy() == 2 * math.ceil(100 / 32)
    assert optimizer.gradient_canary_scores().shape == (40,)
    assert model(x[:5], training=False).shape == (5, data.num_classes)


def test_white_box_canaries_need_a_dp_optimizer(data):
    train_fn = method_train_fn(_config(mechanism="none", target_epsilon=None), data)
    with pytest.raises(ValueError, match="white-box audit is for the DP-SGD"):
        train_fn((data.x_train, data.y_train), 0, gradient_canaries=np.ones(4, bool))


def test_measure_leakage_fills_every_column(data):
    leakage = LeakageConfig(lira_shadows=2, audit_canaries=64)
    columns, report = measure_leakage(_config(), data, leakage, log=lambda _: None)
    assert set(LEAKAGE_COLUMNS) <= set(columns)
    assert 0.0 <= columns["lira_auc"] <= 1.0
    assert 0.0 <= columns["lira_tpr_at_0.1pct_fpr"] <= columns["lira_tpr_at_1pct_fpr"] <= 1.0
    assert report.num_models == 3 and report.num_examples == data.num_train
    for key in ("audit_epsilon_lower_bound", "audit_epsilon_lower_bound_whitebox"):
        assert 0.0 <= columns[key] < 2.0  # a sound run at epsilon 2 cannot be caught above it
    assert columns["audits"]["whitebox"]["num_canaries"] == 64


def test_a_released_noiseless_schedule_is_caught_by_the_white_box_audit(data):
    # Three steps in four released without noise: the canaries that join them are seen exactly.
    # The noise is secret (unseeded), so the bound varies from run to run: with 6 epochs a
    # canary misses every noiseless step with probability 0.25**6; 10 runs measured
    # 2.71-3.10 here (4 epochs: 2.45-3.10 in 20 runs; half the steps noiseless: 1.74-2.71).
    config = _config(noise_schedule="random", noise_probability=0.25, on_skip="release",
                     epochs=6)
    columns, _ = measure_leakage(config, data, LeakageConfig(lira_shadows=0, audit_canaries=200),
                                 log=lambda _: None)
    assert columns["lira_auc"] is None
    noisy_steps_epsilon = 2.0  # what the paper's convention would claim for this run
    assert columns["audit_epsilon_lower_bound_whitebox"] > noisy_steps_epsilon


def test_methods_without_a_dp_optimizer_get_a_reason_not_a_white_box_bound(data):
    columns, report = measure_leakage(_config(mechanism="none", target_epsilon=None), data,
                                      LeakageConfig(lira_shadows=0, audit_canaries=32),
                                      log=lambda _: None)
    assert report is None
    assert columns["audit_epsilon_lower_bound"] >= 0.0
    assert columns["audit_epsilon_lower_bound_whitebox"] is None
    assert "no DP optimizer" in columns["audit_whitebox_note"]


def test_check_bounds_flags_violations_loudly():
    row = dict(method="M", epsilon=1.0, epsilon_noisy_steps_only=1.0,
               audit_epsilon_lower_bound=0.4, audit_epsilon_lower_bound_whitebox=1.3)
    (message,) = check_bounds(row)
    assert message.startswith("VIOLATION") and "white-box" in message and "bug" in message
    row["audit_epsilon_lower_bound_whitebox"] = 0.9
    assert check_bounds(row) == []
    released = dict(method="R", epsilon=math.inf, epsilon_noisy_steps_only=1.6,
                    audit_epsilon_lower_bound=0.1, audit_epsilon_lower_bound_whitebox=4.0)
    (message,) = check_bounds(released)
    assert "not a guarantee" in message and not message.startswith("VIOLATION")
    assert check_bounds(dict(method="N", epsilon=math.inf, epsilon_noisy_steps_only=math.inf,
                             audit_epsilon_lower_bound=3.0)) == []


@pytest.mark.parametrize("settings, match", [
    (dict(lira_shadows=-1), "lira_shadows"),
    (dict(audit_canaries=1), "at least 2"),
    (dict(audit_canaries=2.5), "audit_canaries"),
    (dict(canary_kind="gold"), "canary_kind"),
    (dict(confidence=1.0), "confidence"),
])
def test_bad_leakage_settings_are_refused(settings, match):
    with pytest.raises(ValueError, match=match):
        LeakageConfig(**settings).validated()


def test_lira_is_declined_for_banded_mf_when_half_the_data_cannot_fill_its_folds():
    from tfdp.run.config import RunConfig
    from tfdp.run.leakage import _lira_refusal

    banded = RunConfig(mechanism="banded_mf", bands=2, batch_size=512, target_epsilon=1.62)
    note = _lira_refusal(banded, 1437)
    assert note and "718 examples" in note and "1024" in note
    assert _lira_refusal(banded, 2048) is None  # halves of 1024 fill 2 folds of 512
    gaussian = RunConfig(mechanism="gaussian", batch_size=512, target_epsilon=1.62)
    assert _lira_refusal(gaussian, 1437) is None
