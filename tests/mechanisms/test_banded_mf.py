"""Banded DP-MF: the strategy, its sensitivity and its accounting, checked against JAX-privacy.

The reference figures come from JAX-privacy 2.0.0 (scripts/references/jax_privacy_banded_mf.py,
run in its own environment), never from tfdp.
"""

import json
import math
import os

import dp_accounting
import numpy as np
import pytest

from tfdp.accounting import calibrate_noise_multiplier, compute_epsilon
from tfdp.accounting.banded_mf import (
    BANDED_MF_ASSUMPTIONS,
    banded_mf_dp_event,
    banded_mf_epsilon,
    calibrate_banded_mf_noise,
)
from tfdp.mechanisms.banded_mf import (
    banded_sensitivity,
    banded_toeplitz_coefficients,
    minsep_sensitivity,
    noise_from_recurrence,
    optimize_banded_toeplitz,
    prefix_error,
    strategy_matrix,
)

REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "references",
                         "jax_privacy_banded_mf.json")
with open(REFERENCE) as _f:
    JAXP = json.load(_f)


def _rel(a, b):
    return abs(a - b) / abs(b)


# ----- the strategy -----

def test_strategy_matrix_is_lower_triangular_banded_toeplitz():
    c = [3.0, 2.0, 1.0]
    expected = np.array([[3, 0, 0, 0, 0], [2, 3, 0, 0, 0], [1, 2, 3, 0, 0], [0, 1, 2, 3, 0],
                         [0, 0, 1, 2, 3]], float)
    np.testing.assert_array_equal(strategy_matrix(c, 5), expected)
    np.testing.assert_array_equal(strategy_matrix(c, 2), [[3, 0], [2, 3]])


@pytest.mark.parametrize("bands, steps", [(1, 6), (2, 9), (3, 8), (5, 12), (7, 4)])
def test_recurrence_equals_solving_with_the_strategy(bands, steps):
    rng = np.random.default_rng(bands)
    c = rng.uniform(0.1, 1.0, bands)
    c[0] += 1.0
    z = rng.normal(size=(steps, 3, 2))
    w = noise_from_recurrence(c, z)
    np.testing.assert_allclose(w, np.linalg.solve(strategy_matrix(c, steps),
                                                  z.reshape(steps, -1)).reshape(z.shape),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("bands", [1, 2, 4, 8, 16])
def test_default_coefficients_are_jax_privacys_construction_normalized(bands):
    theirs = np.asarray(JAXP["strategies"]["optimal_max_error_strategy_coefs"][str(bands)])
    ours = banded_toeplitz_coefficients(bands)
    np.testing.assert_allclose(ours, theirs / np.linalg.norm(theirs), rtol=1e-12)
    assert math.isclose(np.linalg.norm(ours), 1.0, rel_tol=1e-12)
    # binom(2i, i) / 4^i, the Taylor coefficients of (1 - x)^{-1/2}, before normalization.
    raw = [math.comb(2 * i, i) / 4 ** i for i in range(bands)]
    np.testing.assert_allclose(ours * (1 / ours[0]), raw, rtol=1e-12)


def test_bands_must_fit_the_run():
    with pytest.raises(ValueError, match="must not exceed `num_steps`"):
        banded_toeplitz_coefficients(5, num_steps=4)
    with pytest.raises(ValueError, match="c_0 must be > 0"):
        strategy_matrix([0.0, 1.0], 3)


# ----- sensitivity, against JAX-privacy -----

@pytest.mark.parametrize("row", JAXP["sensitivity"], ids=lambda r: f"{r['name']}-T{r['num_steps']}")
def test_sensitivity_matches_jax_privacy(row):
    coef, steps, bands = row["coefficients"], row["num_steps"], len(row["coefficients"])
    assert _rel(banded_sensitivity(coef, steps), row["single"]) < 1e-3
    # The explicit matrix's largest column norm, the definition.
    assert _rel(np.linalg.norm(strategy_matrix(coef, steps), axis=0).max(), row["single"]) < 1e-9
    assert _rel(minsep_sensitivity(coef, steps, bands), row["minsep_all"]) < 1e-3
    assert _rel(minsep_sensitivity(coef, steps, bands, 2), row["minsep_2"]) < 1e-3
    if "toeplitz_minsep_all" in row:
        assert _rel(minsep_sensitivity(coef, steps, bands), row["toeplitz_minsep_all"]) < 1e-3


def test_normalized_strategies_have_sensitivity_one_and_overlapping_participation_is_refused():
    for bands in (1, 3, 8):
        c = banded_toeplitz_coefficients(bands)
        assert math.isclose(banded_sensitivity(c, 100), 1.0, rel_tol=1e-12)
        # The last b-1 columns are cut by the matrix's end: smaller, never larger.
        norms = np.linalg.norm(strategy_matrix(c, 20), axis=0)
        assert np.all(norms <= 1 + 1e-12) and math.isclose(norms[-1], c[0], rel_tol=1e-12)
    with pytest.raises(ValueError, match="must be >= the number of bands"):
        minsep_sensitivity(banded_toeplitz_coefficients(4), 20, 3)


# ----- the optimizer's objective and result, against JAX-privacy -----

@pytest.mark.parametrize("row", JAXP["strategies"]["loss_of_tfdp_coefficients"],
                         ids=lambda r: f"{r['name']}-T{r['num_steps']}")
def test_prefix_error_is_jax_privacys_loss(row):
    assert _rel(prefix_error(row["coefficients"], row["num_steps"], "mean"), row["loss_mean"]) < 1e-6
    assert _rel(prefix_error(row["coefficients"], row["num_steps"], "max"), row["loss_max"]) < 1e-6


def test_prefix_error_is_the_workloads_squared_error_times_sensitivity():
    c, steps = np.array([1.0, 0.6, 0.3]), 30
    prefix = np.tril(np.ones((steps, steps)))
    per_step = np.sum((prefix @ np.linalg.inv(strategy_matrix(c, steps))) ** 2, axis=1)
    sens2 = np.sum(c ** 2)
    assert math.isclose(prefix_error(c, steps, "mean"), per_step.mean() * sens2, rel_tol=1e-10)
    assert math.isclose(prefix_error(c, steps, "max"), per_step.max() * sens2, rel_tol=1e-10)


@pytest.mark.parametrize("row", JAXP["strategies"]["optimize_banded_toeplitz"],
                         ids=lambda r: f"T{r['num_steps']}-b{r['bands']}")
def test_optimized_strategy_beats_the_truncated_square_root_and_matches_jax_privacy(row):
    steps, bands = row["num_steps"], row["bands"]
    ours = optimize_banded_toeplitz(bands, steps)
    assert math.isclose(np.linalg.norm(ours), 1.0, rel_tol=1e-12)
    optimized = prefix_error(ours, steps)
    truncated = prefix_error(banded_toeplitz_coefficients(bands), steps)
    assert optimized < 0.97 * truncated
    # JAX-privacy's L-BFGS reaches the same optimum (ours no worse, within 0.1%).
    assert optimized <= row["loss_mean"] * (1 + 1e-3)
    assert _rel(optimized, row["loss_mean"]) < 1e-2


# ----- accounting, against JAX-privacy's DpsgdTrainingAccountant(cycle_length=b) -----

def _case_id(row):
    return (f"n{row['num_examples']}-B{row['batch_size']}-b{row['bands']}-T{row['num_steps']}"
            f"-s{row['noise_multiplier']}")


@pytest.mark.parametrize("accountant", ["pld", "rdp"])
@pytest.mark.parametrize("row", JAXP["epsilon"], ids=_case_id)
def test_epsilon_matches_jax_privacy(row, accountant):
    ours = banded_mf_epsilon(row["num_examples"], row["batch_size"], row["noise_multiplier"],
                             row["num_steps"], row["bands"], row["delta"], accountant=accountant)
    assert _rel(ours, row[accountant]) < 1e-3


def test_one_band_is_dp_sgds_accounting():
    for accountant in ("pld", "rdp"):
        dpsgd = compute_epsilon(60000, 256, 1.1, steps=2340, delta=1e-5,
                                accountant=accountant).epsilon
        assert math.isclose(banded_mf_epsilon(60000, 256, 1.1, 2340, 1, 1e-5, accountant),
                            dpsgd, rel_tol=1e-12)


def test_dp_event_composes_one_subsampled_gaussian_per_participation():
    event = banded_mf_dp_event(1.3, 0.05, 1001, 4)
    assert event == dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(0.05, dp_accounting.GaussianDpEvent(1.3)), 251)


def test_more_bands_than_the_data_allows_is_refused_with_what_to_do():
    with pytest.raises(ValueError, match=r"Use at most 39 bands, or a smaller batch size"):
        banded_mf_epsilon(10000, 256, 1.0, 100, 40, 1e-5)
    with pytest.raises(ValueError, match="batch_size \\* bands"):
        calibrate_banded_mf_noise(2.0, 1e-5, 10000, 256, 100, 40)


def test_calibration_meets_the_target_with_the_smallest_noise():
    sigma = calibrate_banded_mf_noise(2.0, 1e-5, 60000, 256, 2340, 4, accountant="rdp")
    at = banded_mf_epsilon(60000, 256, sigma, 2340, 4, 1e-5, accountant="rdp")
    assert 2.0 - 2e-3 < at <= 2.0
    assert banded_mf_epsilon(60000, 256, sigma - 2e-3, 2340, 4, 1e-5, accountant="rdp") > 2.0
    # One band: DP-SGD's calibration.
    assert math.isclose(calibrate_banded_mf_noise(2.0, 1e-5, 60000, 256, 2340, 1, "rdp"),
                        calibrate_noise_multiplier(2.0, 1e-5, 60000, 256, steps=2340,
                                                   accountant="rdp"), rel_tol=1e-9)


def test_the_statement_of_assumptions_names_what_the_figure_needs():
    for phrase in ("independently and uniformly from b folds", "add-or-remove-one",
                   "largest column norm 1", "ceil(steps / b)"):
        assert phrase in BANDED_MF_ASSUMPTIONS
