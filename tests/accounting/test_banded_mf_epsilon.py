"""compute_epsilon / calibration / PrivacyCallback with mechanism="banded_mf"."""

import math

import dp_accounting
import pytest

import tfdp
from tfdp.accounting.banded_mf import BANDED_MF_ASSUMPTIONS, banded_mf_epsilon

N, BATCH, SIGMA, STEPS, BANDS = 6000, 60, 0.9, 500, 5


def _pld(q, count):
    accountant = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-4)
    accountant.compose(dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(SIGMA)), count))
    return accountant.get_epsilon(1e-5)


def test_compute_epsilon_accounts_ceil_t_over_b_participations_at_b_times_the_rate():
    result = tfdp.compute_epsilon(N, BATCH, SIGMA, steps=STEPS, delta=1e-5,
                                  mechanism="banded_mf", bands=BANDS)
    expected = _pld(BATCH * BANDS / N, math.ceil(STEPS / BANDS))
    assert result.epsilon == pytest.approx(expected, rel=1e-9)
    assert result.epsilon == pytest.approx(
        banded_mf_epsilon(N, BATCH, SIGMA, STEPS, BANDS, 1e-5), rel=1e-9)
    # Wrong accountings: T steps at B / n, or T steps at B * b / n.
    assert abs(result.epsilon - _pld(BATCH / N, STEPS)) > 0.05 * result.epsilon
    assert result.epsilon < 0.5 * _pld(BATCH * BANDS / N, STEPS)
    assert (result.accounted_steps, result.bands) == (100, BANDS)
    assert result.sampling_probability == pytest.approx(BATCH * BANDS / N)
    assert BANDED_MF_ASSUMPTIONS.split()[0] in result.statement
    assert "cyclic Poisson" in result.statement


def test_calibration_reaches_the_target_through_the_banded_accounting():
    sigma = tfdp.accounting.calibrate_noise_multiplier(
        2.0, 1e-5, N, BATCH, steps=STEPS, mechanism="banded_mf", bands=BANDS)
    reached = tfdp.compute_epsilon(N, BATCH, sigma, steps=STEPS, mechanism="banded_mf",
                                   bands=BANDS).epsilon
    assert 1.98 < reached <= 2.0
    gaussian = tfdp.accounting.calibrate_noise_multiplier(2.0, 1e-5, N, BATCH, steps=STEPS,
                                                          accountant="pld")
    assert abs(sigma - gaussian) > 0.05


def test_refusals():
    kwargs = dict(steps=STEPS, delta=1e-5, mechanism="banded_mf")
    with pytest.raises(ValueError, match="bands"):
        tfdp.compute_epsilon(N, BATCH, SIGMA, **kwargs)
    with pytest.raises(ValueError, match="batch_size"):
        tfdp.compute_epsilon(N, BATCH, SIGMA, bands=101, **kwargs)  # 60 * 101 > 6000
    with pytest.raises(ValueError, match="sampling"):
        tfdp.compute_epsilon(N, BATCH, SIGMA, bands=BANDS, sampling="shuffle", **kwargs)
    with pytest.raises(ValueError, match="microbatches"):
        tfdp.compute_epsilon(N, BATCH, SIGMA, bands=BANDS, used_microbatching=True, **kwargs)
    with pytest.raises(ValueError, match="per group"):
        tfdp.compute_epsilon(N, BATCH, SIGMA, bands=BANDS, privacy_unit="patient", **kwargs)
    with pytest.raises(ValueError, match="steps"):
        tfdp.compute_epsilon(N, BATCH, SIGMA, steps=3, mechanism="banded_mf", bands=BANDS)
    with pytest.raises(ValueError, match="banded_mf"):
        tfdp.compute_epsilon(N, BATCH, SIGMA, steps=STEPS, bands=BANDS)
    with pytest.raises(ValueError, match="bands"):
        tfdp.mechanisms.get_mechanism("banded_mf").dp_event(SIGMA, BATCH / N, STEPS)
