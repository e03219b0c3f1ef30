"""tfdp.run with --mechanism=banded_mf: cyclic batches from the ledger step, resume, accounting."""

import dataclasses

import numpy as np
import pytest

from tfdp import run
from tfdp.accounting.banded_mf import banded_mf_epsilon
from tfdp.data import Dataset
from tfdp.models import registry
from tfdp.run import comparison
from tfdp.run.training import train_model

from noise_only import no_gradient as _no_gradient, zeros as _zeros


def _config(model_dir, **overrides):
    return run.RunConfig(dataset="zeros", model="no_gradient", mechanism="banded_mf", bands=2,
                         noise_multiplier=1.0, epochs=1, batch_size=8, learning_rate=1.0,
                         model_dir=str(model_dir), **overrides).validated()


def test_a_resumed_banded_run_continues_the_ledger_and_the_fold_cycle(tmp_path, monkeypatch):
    monkeypatch.setitem(registry._BUILDERS, "no_gradient", _no_gradient)
    first_steps = []
    original = Dataset.cyclic_poisson_batches

    def recording(self, batch_size, bands, **kwargs):
        first_steps.append(kwargs["first_step"])
        return original(self, batch_size, bands, **kwargs)

    monkeypatch.setattr(Dataset, "cyclic_poisson_batches", recording)
    config, data = _config(tmp_path / "run"), _zeros()
    first = train_model(config, data, log=lambda _: None, validate=False)
    assert int(first.optimizer.iterations.numpy()) == 8
    epoch_1 = first.model.get_weights()[0].copy()
    resumed = train_model(dataclasses.replace(config, epochs=2), data, log=lambda _: None,
                          validate=False)
    optimizer = resumed.optimizer
    assert int(optimizer.iterations.numpy()) == 16
    assert first_steps == [0, 8]  # step t samples fold t mod b from the ledger step on
    # The recurrence restarted in the new process (zero history, this process's 8 steps only).
    assert int(optimizer.banded_noise.steps.numpy()) == 8
    update = resumed.model.get_weights()[0] - epoch_1
    assert np.abs(update).max() > 0 and not np.allclose(update, epoch_1, atol=1e-6)
    record = run.methods.privacy_record(resumed.config, optimizer, 64)
    assert record.epsilon == pytest.approx(banded_mf_epsilon(64, 8, 1.0, 16, 2, 1e-5), rel=1e-9)
    with pytest.raises(ValueError, match="bands"):  # another strategy cannot take the ledger on
        train_model(dataclasses.replace(config, epochs=3, bands=4), data, log=lambda _: None,
                    validate=False)


def test_run_config_refusals_and_compare_row():
    with pytest.raises(ValueError, match="--bands=4"):
        run.RunConfig(mechanism="banded_mf", noise_multiplier=1.0).validated()
    with pytest.raises(ValueError, match="--mechanism=banded_mf"):
        run.RunConfig(bands=4, noise_multiplier=1.0).validated()
    with pytest.raises(ValueError, match="regular"):
        run.RunConfig(mechanism="banded_mf", bands=4, noise_multiplier=1.0,
                      noise_schedule="random", noise_probability=0.5).validated()
    with pytest.raises(ValueError, match="sampling=poisson"):
        run.RunConfig(mechanism="banded_mf", bands=4, noise_multiplier=1.0,
                      sampling="shuffle").validated()
    assert "bands" in run.config.LEDGER_KEYS
    compare = comparison.CompareConfig(methods=("gaussian_regn", "gaussian_banded_mf"),
                                       sweep_epsilons=()).validated()
    configs = dict(compare.plan())
    assert configs["gaussian_banded_mf"].mechanism == "banded_mf"
    assert configs["gaussian_banded_mf"].bands == comparison.DEFAULT_BANDS
    assert configs["gaussian_regn"].bands is None
    assert "gaussian_banded_mf" not in comparison.CompareConfig().methods
