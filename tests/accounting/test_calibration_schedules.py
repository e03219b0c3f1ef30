"""calibrate_noise_multiplier for every schedule and for planned steps; the one ledger path;
every record satisfies PrivacyRecord."""

import math

import pytest

import tfdp
from tfdp import accounting

N, B, DELTA = 1437, 64, 1e-5


def test_steps_and_the_equivalent_epochs_calibrate_the_same_multiplier():
    epochs = 3.0
    steps = math.ceil(epochs * N / B)
    by_epochs = tfdp.calibrate_noise_multiplier(2.0, DELTA, N, B, epochs)
    by_steps = tfdp.calibrate_noise_multiplier(2.0, DELTA, N, B, steps=steps)
    assert by_steps == pytest.approx(by_epochs, rel=1e-9)
    with pytest.raises(ValueError, match="exactly one of `epochs`"):
        tfdp.calibrate_noise_multiplier(2.0, DELTA, N, B, epochs, steps=steps)


@pytest.mark.parametrize("mechanism, on_skip", [("gaussian", "release"), ("gaussian", "drop"),
                                                 ("laplace", "release")])
def test_random_schedule_meets_the_target_over_its_expected_noisy_steps(mechanism, on_skip):
    steps, p, target = 230, 0.5, 1.62
    multiplier = tfdp.calibrate_noise_multiplier(
        target, DELTA, N, B, steps=steps, mechanism=mechanism, noise_schedule="random",
        noise_probability=p, on_skip=on_skip, value_discretization_interval=1e-3)
    planned = tfdp.compute_epsilon(N, B, multiplier, steps=steps, mechanism=mechanism,
                                   noise_schedule="random", noise_probability=p, on_skip=on_skip,
                                   value_discretization_interval=1e-3)
    assert planned.epsilon_noisy_steps_only <= target * (1 + 1e-6)
    assert planned.epsilon_noisy_steps_only == pytest.approx(target, rel=2e-3)
    # Half the noisy steps need less noise than the regular schedule for the same figure.
    regular = tfdp.calibrate_noise_multiplier(target, DELTA, N, B, steps=steps,
                                              mechanism=mechanism,
                                              value_discretization_interval=1e-3)
    assert multiplier < regular
    if on_skip == "release":
        assert math.isinf(planned.epsilon)  # the calibrated figure is not a guarantee


def test_random_schedule_settings_are_checked():
    with pytest.raises(ValueError, match="noise_probability"):
        tfdp.calibrate_noise_multiplier(1.0, DELTA, N, B, 2, noise_probability=0.5)
    with pytest.raises(ValueError, match="never adds noise"):
        tfdp.calibrate_noise_multiplier(1.0, DELTA, N, B, 2, noise_schedule="random",
                                        noise_probability=0.0)


def test_every_record_is_a_privacy_record():
    dp = tfdp.compute_epsilon(N, B, 1.1, epochs=1)
    other = accounting.residual_perturbation_privacy(0.5, num_examples=N, batch_size=B, steps=10)
    none = accounting.no_privacy(DELTA)
    for record in (dp, other, none):
        assert isinstance(record, accounting.PrivacyRecord)
        assert set(record.to_dict()) >= {"epsilon", "epsilon_noisy_steps_only", "delta",
                                         "accountant", "statement"}
    assert dp.is_guarantee and not other.is_guarantee and not none.is_guarantee
    assert math.isinf(none.epsilon) and none.accountant is None and "No-DP" in none.statement


def test_epsilon_from_ledger_before_any_step_is_zero_and_refuses_plain_optimizers():
    import keras

    optimizer = tfdp.DPKerasSGDOptimizer(l2_norm_clip=1.0, noise_multiplier=1.1)
    result = accounting.epsilon_from_ledger(optimizer, N)
    assert result.epsilon == 0.0 and result.steps == 0
    with pytest.raises(ValueError, match="tfdp DP optimizer"):
        accounting.epsilon_from_ledger(keras.optimizers.SGD(), N)


def test_format_epsilon_is_the_one_formatter():
    assert accounting.format_epsilon(math.inf) == "inf"
    assert accounting.format_epsilon(1.23456) == "1.235"
    assert accounting.format_epsilon(None) == "n/a"
