"""compute_epsilon and calibrate_noise_multiplier against independent references.

References are computed here with dp_accounting directly and with TF Privacy's
compute_dp_sgd_privacy_lib, never taken from tfdp's own output.
"""

import math
import re

import dp_accounting
import pytest
from scipy import stats
import tfdp  # noqa: I001 (first: it applies TF Privacy's import switch)
from tensorflow_privacy.privacy.analysis import compute_dp_sgd_privacy_lib as tfp_lib
from tfdp.accounting import PrivacyResult

# The TF Privacy MNIST tutorial setting.
N, B, SIGMA, EPOCHS, DELTA = 60000, 256, 1.1, 60, 1e-5
Q = B / N
STEPS = math.ceil(EPOCHS * N / B)  # 14063
COARSE = 1e-3  # PLD grid for tests: fast, and pessimistic (never below the exact value)


def rdp_gaussian(sigma, q, count, delta=DELTA):
    """Reference: count Poisson-sampled Gaussian steps under dp_accounting's RDP accountant."""
    accountant = dp_accounting.rdp.RdpAccountant()
    step = dp_accounting.GaussianDpEvent(sigma)
    if q is not None:
        step = dp_accounting.PoissonSampledDpEvent(q, step)
    accountant.compose(dp_accounting.SelfComposedDpEvent(step, count))
    return accountant.get_epsilon(delta)


def pld(event_cls, sigma, q, count, delta=DELTA, interval=COARSE):
    """Reference: the same composition under dp_accounting's PLD accountant."""
    accountant = dp_accounting.pld.PLDAccountant(value_discretization_interval=interval)
    accountant.compose(
        dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(q, event_cls(sigma)), count
        )
    )
    return accountant.get_epsilon(delta)


def tf_privacy_statement_figures(used_microbatching=False):
    """(epsilon once per epoch, epsilon assuming Poisson) parsed from TF Privacy's statement."""
    text = tfp_lib.compute_dp_sgd_privacy_statement(
        N, B, EPOCHS, SIGMA, DELTA, used_microbatching=used_microbatching
    )
    once = float(re.search(r"once per epoch:\s+([\d.]+)", text).group(1))
    poisson = float(re.search(r"Poisson sampling \(\*\):\s+([\d.]+)", text).group(1))
    return once, poisson


# ----- Gaussian, regular schedule -----


def test_mnist_tutorial_matches_tf_privacy_and_dp_accounting():
    result = tfdp.compute_epsilon(N, B, SIGMA, epochs=EPOCHS, delta=DELTA)
    assert isinstance(result, PrivacyResult)
    assert result.accountant == "rdp"
    assert result.epsilon == pytest.approx(rdp_gaussian(SIGMA, Q, STEPS), rel=1e-9)
    _, tf_privacy_poisson = tf_privacy_statement_figures()
    assert result.epsilon == pytest.approx(tf_privacy_poisson, abs=6e-4)  # printed to 3 decimals
    reference = tfp_lib._compute_dp_sgd_example_privacy(  # pylint: disable=protected-access
        EPOCHS, SIGMA, DELTA, used_microbatching=False, poisson_subsampling_probability=Q
    )
    assert result.epsilon == pytest.approx(reference, rel=1e-9)
    assert 2.0 < result.epsilon < 3.5  # "about 3" in the tutorial
    assert result.epsilon_noisy_steps_only == result.epsilon
    assert result.delta == DELTA and result.steps == STEPS
    assert "Poisson sampling" in result.statement and "Gaussian" in result.statement


def test_steps_and_epochs_give_the_same_figure():
    by_epochs = tfdp.compute_epsilon(N, B, SIGMA, epochs=EPOCHS)
    by_steps = tfdp.compute_epsilon(N, B, SIGMA, steps=STEPS)
    assert by_steps.epsilon == by_epochs.epsilon
    fewer = tfdp.compute_epsilon(N, B, SIGMA, steps=STEPS - 500)
    assert fewer.epsilon < by_steps.epsilon


def test_microbatching_halves_the_accounted_noise_like_tf_privacy():
    result = tfdp.compute_epsilon(N, B, SIGMA, epochs=EPOCHS, used_microbatching=True)
    _, tf_privacy_poisson = tf_privacy_statement_figures(used_microbatching=True)
    assert result.epsilon == pytest.approx(tf_privacy_poisson, abs=6e-4)
    assert result.epsilon == pytest.approx(rdp_gaussian(SIGMA / 2, Q, STEPS), rel=1e-9)
    assert result.epsilon > tfdp.compute_epsilon(N, B, SIGMA, epochs=EPOCHS).epsilon
    assert "microbatch" in result.statement


def test_shuffle_is_accounted_for_replace_one_at_twice_the_sensitivity():
    # Fixed-size shuffled batches: adding an example moves another out of its place, so
    # the guarantee is replace-one, where the replaced example's clipped gradient moves by
    # up to 2C: each pass is a Gaussian mechanism with multiplier sigma / 2.
    result = tfdp.compute_epsilon(N, B, SIGMA, epochs=EPOCHS, sampling="shuffle")
    _, poisson = tf_privacy_statement_figures()
    assert result.adjacency == "replace-one"
    assert result.accounted_noise_multiplier == pytest.approx(SIGMA / 2)
    assert result.epsilon == pytest.approx(rdp_gaussian(SIGMA / 2, None, EPOCHS), rel=1e-9)
    assert result.epsilon > rdp_gaussian(SIGMA, None, EPOCHS) + 1.0
    # The Poisson figure (add-or-remove-one, sensitivity C) stays, labelled.
    assert result.epsilon_assuming_poisson == pytest.approx(poisson, abs=6e-4)
    assert "replace-one" in result.statement
    assert "NOT a guarantee" in result.statement
    assert "believed" not in result.statement
    poisson_result = tfdp.compute_epsilon(N, B, SIGMA, epochs=EPOCHS)
    assert poisson_result.epsilon_assuming_poisson is None
    assert poisson_result.adjacency == "add-or-remove-one"
    assert "add-or-remove-one" in poisson_result.statement


def test_shuffle_with_microbatches_is_still_twice_the_clip():
    # A replaced example changes one microbatch by up to 2C: no further halving.
    result = tfdp.compute_epsilon(N, B, SIGMA, epochs=EPOCHS, sampling="shuffle",
                                  used_microbatching=True)
    assert result.accounted_noise_multiplier == pytest.approx(SIGMA / 2)
    assert result.epsilon == pytest.approx(rdp_gaussian(SIGMA / 2, None, EPOCHS), rel=1e-9)
    assert result.epsilon_assuming_poisson == pytest.approx(
        rdp_gaussian(SIGMA / 2, Q, STEPS), rel=1e-9)


def test_shuffle_from_steps_never_counts_fewer_passes_than_were_started():
    # 300 examples, batch 32: model.fit takes 10 steps per pass, a drop-remainder pipeline 9.
    for steps, passes_at_least in [(10, 1), (18, 2), (20, 2), (27, 3)]:
        result = tfdp.compute_epsilon(300, 32, SIGMA, steps=steps, sampling="shuffle")
        assert result.epsilon >= rdp_gaussian(SIGMA / 2, None, passes_at_least) - 1e-12


def test_pld_on_request_matches_dp_accounting_pld():
    result = tfdp.compute_epsilon(
        N, B, SIGMA, epochs=EPOCHS, accountant="pld", value_discretization_interval=COARSE
    )
    assert result.accountant == "pld"
    reference = pld(dp_accounting.GaussianDpEvent, SIGMA, Q, STEPS)
    assert result.epsilon == pytest.approx(reference, rel=1e-9)
    # PLD is tighter than RDP here but the same order of magnitude.
    assert 0.7 * rdp_gaussian(SIGMA, Q, STEPS) < result.epsilon < rdp_gaussian(SIGMA, Q, STEPS)


# ----- Laplace -----


def test_laplace_uses_pld_and_matches_dp_accounting():
    result = tfdp.compute_epsilon(
        N, B, SIGMA, epochs=EPOCHS, mechanism="laplace", value_discretization_interval=COARSE
    )
    assert result.accountant == "pld"
    reference = pld(dp_accounting.LaplaceDpEvent, SIGMA, Q, STEPS)
    assert result.epsilon == pytest.approx(reference, rel=1e-9)
    assert math.isfinite(result.epsilon) and result.epsilon > 0
    assert "Laplace" in result.statement


def test_laplace_refuses_the_rdp_accountant_as_dp_accounting_does():
    accountant = dp_accounting.rdp.RdpAccountant()
    sampled_laplace = dp_accounting.PoissonSampledDpEvent(Q, dp_accounting.LaplaceDpEvent(1.0))
    assert not accountant.supports(sampled_laplace)
    with pytest.raises(ValueError, match="pld"):
        tfdp.compute_epsilon(N, B, SIGMA, epochs=1, mechanism="laplace", accountant="rdp")


# ----- the random noise schedule -----


def test_released_random_schedule_has_no_formal_guarantee():
    p = 0.5
    result = tfdp.compute_epsilon(
        N, B, SIGMA, epochs=EPOCHS, noise_schedule="random", noise_probability=p
    )
    assert math.isinf(result.epsilon)
    assert not result.is_guarantee
    expected_noisy = math.ceil(p * STEPS)
    assert result.epsilon_noisy_steps_only == pytest.approx(
        rdp_gaussian(SIGMA, Q, expected_noisy), rel=1e-9
    )
    assert "NO formal" in result.statement and "NOT a privacy guarantee" in result.statement


def test_released_random_schedule_with_a_ledger():
    noisy = 6900
    result = tfdp.compute_epsilon(
        N, B, SIGMA, steps=STEPS, noise_schedule="random", noise_probability=0.5,
        noisy_steps=noisy,
    )
    assert math.isinf(result.epsilon)
    assert result.epsilon_noisy_steps_only == pytest.approx(rdp_gaussian(SIGMA, Q, noisy), rel=1e-9)
    # If the coin happened never to skip, nothing noiseless was released.
    all_noisy = tfdp.compute_epsilon(
        N, B, SIGMA, steps=STEPS, noise_schedule="random", noise_probability=0.5,
        noisy_steps=STEPS,
    )
    assert all_noisy.epsilon == pytest.approx(rdp_gaussian(SIGMA, Q, STEPS), rel=1e-9)


def test_laplace_random_release_is_infinite_too():
    result = tfdp.compute_epsilon(
        1000, 50, 2.0, epochs=2, mechanism="laplace", noise_schedule="random",
        noise_probability=0.7, value_discretization_interval=COARSE,
    )
    assert math.isinf(result.epsilon)
    steps = math.ceil(2 * 1000 / 50)
    assert result.epsilon_noisy_steps_only == pytest.approx(
        pld(dp_accounting.LaplaceDpEvent, 2.0, 0.05, math.ceil(0.7 * steps)), rel=1e-9
    )


def test_random_schedule_with_p_one_equals_regular():
    regular = tfdp.compute_epsilon(N, B, SIGMA, epochs=EPOCHS)
    for on_skip in ("release", "drop"):
        random_p1 = tfdp.compute_epsilon(
            N, B, SIGMA, epochs=EPOCHS, noise_schedule="random", noise_probability=1.0,
            on_skip=on_skip,
        )
        assert random_p1.epsilon == regular.epsilon


def test_dropped_schedule_composes_over_realized_noisy_steps():
    noisy = 7100
    result = tfdp.compute_epsilon(
        N, B, SIGMA, steps=STEPS, noise_schedule="random", noise_probability=0.5,
        on_skip="drop", noisy_steps=noisy,
    )
    assert result.epsilon == pytest.approx(rdp_gaussian(SIGMA, Q, noisy), rel=1e-9)
    assert result.epsilon_noisy_steps_only == result.epsilon
    assert "ledger" in result.statement


def test_dropped_schedule_planning_is_a_guarantee_over_a_binomial_upper_count():
    p = 0.5
    result = tfdp.compute_epsilon(
        N, B, SIGMA, epochs=EPOCHS, noise_schedule="random", noise_probability=p,
        on_skip="drop",
    )
    tail = DELTA / 10
    upper = int(stats.binom.ppf(1 - tail, STEPS, p))
    assert stats.binom.sf(upper, STEPS, p) <= tail  # P[more noisy steps than `upper`]
    assert result.epsilon == pytest.approx(
        rdp_gaussian(SIGMA, Q, upper, delta=DELTA - tail), rel=1e-9
    )
    expected = rdp_gaussian(SIGMA, Q, math.ceil(p * STEPS))
    assert result.epsilon_noisy_steps_only == pytest.approx(expected, rel=1e-9)
    assert result.epsilon > result.epsilon_noisy_steps_only  # the estimate is not the guarantee
    assert "ESTIMATE" in result.statement


# ----- no privacy, bad input -----


def test_mechanism_none_has_infinite_epsilon():
    result = tfdp.compute_epsilon(N, B, None, epochs=1, mechanism="none")
    assert math.isinf(result.epsilon) and math.isinf(result.epsilon_noisy_steps_only)
    assert "NO differential-privacy guarantee" in result.statement


def test_zero_noise_for_a_private_mechanism_points_to_mechanism_none():
    for mechanism in ("gaussian", "laplace"):
        with pytest.raises(ValueError, match="mechanism='none'"):
            tfdp.compute_epsilon(N, B, 0.0, epochs=1, mechanism=mechanism)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_examples=0), "num_examples"),
        (dict(num_examples=-5), "num_examples"),
        (dict(batch_size=0), "batch_size"),
        (dict(batch_size=N + 1), "must not exceed"),
        (dict(delta=0.0), "delta"),
        (dict(delta=1.0), "delta"),
        (dict(delta=1.5), "delta"),
        (dict(noise_multiplier=-1.0), "noise_multiplier"),
        (dict(noise_multiplier=None), "noise_multiplier"),
        (dict(epochs=None), "exactly one"),
        (dict(steps=10), "exactly one"),
        (dict(epochs=0), "epochs"),
        (dict(mechanism="gauss"), "mechanism"),
        (dict(noise_schedule="sometimes"), "noise_schedule"),
        (dict(on_skip="skip"), "on_skip"),
        (dict(sampling="uniform"), "sampling"),
        (dict(accountant="moments"), "accountant"),
        (dict(noise_probability=0.5), "noise_probability"),
        (dict(noise_schedule="random", noise_probability=1.5), "noise_probability"),
        (dict(noisy_steps=STEPS + 1), "noisy_steps"),
        (dict(noisy_steps=-1), "noisy_steps"),
    ],
)
def test_bad_input_raises_value_error_that_names_the_argument(kwargs, message):
    arguments = dict(num_examples=N, batch_size=B, noise_multiplier=SIGMA, epochs=EPOCHS)
    arguments.update(kwargs)
    positional = [arguments.pop(k) for k in ("num_examples", "batch_size", "noise_multiplier")]
    with pytest.raises(ValueError, match=message):
        tfdp.compute_epsilon(*positional, **arguments)


# ----- monotonicity -----


@pytest.mark.parametrize("mechanism", ["gaussian", "laplace"])
def test_more_noise_less_epsilon_more_epochs_more_epsilon(mechanism):
    def eps(sigma, epochs):
        return tfdp.compute_epsilon(
            2000, 64, sigma, epochs=epochs, mechanism=mechanism,
            value_discretization_interval=COARSE,
        ).epsilon

    by_noise = [eps(sigma, 5) for sigma in (0.8, 1.1, 2.0, 4.0)]
    assert all(a > b for a, b in zip(by_noise, by_noise[1:])), by_noise
    by_epochs = [eps(1.1, epochs) for epochs in (1, 3, 10, 30)]
    assert all(a < b for a, b in zip(by_epochs, by_epochs[1:])), by_epochs


def test_to_dict_holds_the_contract_keys():
    record = tfdp.compute_epsilon(N, B, SIGMA, epochs=1).to_dict()
    for key in ("epsilon", "epsilon_noisy_steps_only", "delta", "accountant", "statement"):
        assert key in record
    assert record["epsilon"] == tfdp.compute_epsilon(N, B, SIGMA, epochs=1).epsilon


# ----- calibration -----


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),
        dict(used_microbatching=True),
        dict(sampling="shuffle"),
        dict(mechanism="laplace", value_discretization_interval=COARSE),
        dict(accountant="pld", value_discretization_interval=COARSE),
    ],
)
def test_calibration_round_trip_within_one_percent(kwargs):
    n, b, epochs, target = 5000, 100, 5, 2.0
    sigma = tfdp.calibrate_noise_multiplier(target, DELTA, n, b, epochs, **kwargs)
    reached = tfdp.compute_epsilon(n, b, sigma, epochs=epochs, **kwargs).epsilon
    assert reached <= target + 1e-9
    assert reached == pytest.approx(target, rel=0.01)
    # The smallest such multiplier: 1% less noise overshoots the target.
    assert tfdp.compute_epsilon(n, b, sigma * 0.99, epochs=epochs, **kwargs).epsilon > target


def test_calibration_for_the_tutorial_matches_an_independent_rdp_search():
    sigma = tfdp.calibrate_noise_multiplier(3.0, DELTA, N, B, EPOCHS)
    assert rdp_gaussian(sigma, Q, STEPS) <= 3.0 + 1e-9
    assert rdp_gaussian(sigma * 0.995, Q, STEPS) > 3.0


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        ((0.0, DELTA, N, B, 1), {}, "target_epsilon"),
        ((3.0, 0.0, N, B, 1), {}, "delta"),
        ((3.0, DELTA, N, N + 1, 1), {}, "must not exceed"),
        ((3.0, DELTA, N, B, 0), {}, "epochs"),
        ((3.0, DELTA, N, B, 1), dict(mechanism="none"), "mechanism"),
        ((3.0, DELTA, N, B, 1), dict(mechanism="laplace", accountant="rdp"), "pld"),
        ((1e6, DELTA, N, B, 1), {}, "target_epsilon"),
    ],
)
def test_calibration_bad_input(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tfdp.calibrate_noise_multiplier(*args, **kwargs)


# ----- the script -----


def test_compute_epsilon_script_prints_json_and_refuses_bad_flags(run_script):
    import json

    base = [f"--num_examples={N}", f"--batch_size={B}", "--epochs=60"]
    run = run_script("compute_epsilon.py", *base, "--noise_multiplier=1.1", "--sampling=shuffle",
                     "--json")  # in this process: conftest's run_script
    assert run.returncode == 0, run.stderr[-2000:]
    record = json.loads(run.stdout)
    reference = tfdp.compute_epsilon(N, B, SIGMA, epochs=EPOCHS, sampling="shuffle")
    assert record["epsilon"] == pytest.approx(reference.epsilon, rel=1e-12)
    assert record["epsilon_assuming_poisson"] == pytest.approx(
        reference.epsilon_assuming_poisson, rel=1e-12
    )
    bad = run_script("compute_epsilon.py", *base, "--noise_multiplier=0")
    assert bad.returncode != 0 and "mechanism='none'" in bad.stdout + bad.stderr


def test_excluded_rdp_order_warnings_are_dropped(caplog):
    # dp_accounting warns for every fractional order whose series does not converge (here
    # q = 0.178, sigma = 2); the order is left out, which only makes epsilon larger.
    import logging

    caplog.set_level(logging.WARNING)
    result = tfdp.compute_epsilon(1437, 256, 2.0, epochs=3)
    assert 0 < result.epsilon < float("inf")
    assert not any("Excluding this order" in r.getMessage() for r in caplog.records)
