"""A resumed run draws fresh noise and batches: never the first epochs' again, nor another resume's.

Replaying them would release two updates with the same Poisson batch and the same noise:
their difference is a noiseless difference of clipped gradients, outside any accountant.
The run reseeds every process with its `seed` (as Keras's reproducibility advice says to),
so these tests also show that no user seed reaches the noise or the batches.
"""

import dataclasses
import shutil

import numpy as np

from tfdp import run
from tfdp.data import Dataset
from tfdp.models import registry
from tfdp.run import checkpoint, methods
from tfdp.run.training import train_model

from noise_only import no_gradient as _no_gradient, zeros as _zeros


def _config(model_dir, **overrides):
    return run.RunConfig(dataset="zeros", model="no_gradient", noise_multiplier=1.0,
                         epochs=1, batch_size=16, learning_rate=1.0, model_dir=str(model_dir),
                         **overrides).validated()


def _train(config, data):
    return train_model(config, data, log=lambda _: None, validate=False)


def _record_sampler_argument(monkeypatch, name):
    """The list that receives `name`'s value of every `Dataset.poisson_batches` call."""
    values = []
    original = Dataset.poisson_batches

    def recording(self, batch_size, **kwargs):
        values.append(kwargs.get(name))
        return original(self, batch_size, **kwargs)

    monkeypatch.setattr(Dataset, "poisson_batches", recording)
    return values


def test_resumed_epochs_draw_new_noise_and_two_resumes_differ(tmp_path, monkeypatch):
    monkeypatch.setitem(registry._BUILDERS, "no_gradient", _no_gradient)  # this test only
    config, data = _config(tmp_path / "run"), _zeros()
    first = _train(config, data)
    epoch_1 = first.model.get_weights()[0].copy()
    assert np.abs(epoch_1).max() > 0  # the noise moved the weights
    shutil.copytree(tmp_path / "run", tmp_path / "copy")
    updates = []
    for model_dir in ("run", "copy"):  # the same checkpoint, resumed twice
        resumed = _train(dataclasses.replace(config, epochs=2, model_dir=str(tmp_path / model_dir)),
                         data)
        assert resumed.optimizer.iterations.numpy() == 2 * first.optimizer.iterations.numpy()
        updates.append(resumed.model.get_weights()[0] - epoch_1)
    # Neither resumed epoch's noise is the first epoch's again, nor the other resume's.
    for update in updates:
        assert not np.allclose(update, epoch_1, atol=1e-6)
    assert not np.allclose(updates[0], updates[1], atol=1e-6)


def test_the_insecure_opt_in_reproduces_a_run_but_never_across_a_resume(tmp_path, monkeypatch):
    monkeypatch.setitem(registry._BUILDERS, "no_gradient", _no_gradient)
    seeds = _record_sampler_argument(monkeypatch, "insecure_reproducible_seed")
    data = _zeros()
    weights = []
    for name in ("a", "b"):
        trained = _train(_config(tmp_path / name, insecure_reproducible_seed=5), data)
        weights.append(trained.model.get_weights()[0].copy())
    np.testing.assert_array_equal(weights[0], weights[1])  # reproducible, as asked
    config = _config(tmp_path / "a", insecure_reproducible_seed=5)
    resumed = _train(dataclasses.replace(config, epochs=2), data)
    assert not np.allclose(resumed.model.get_weights()[0] - weights[0], weights[0], atol=1e-6)
    # The resumed epoch's batches come from a seed of their own, derived from the epoch.
    assert seeds[0] == seeds[1] == methods.insecure_run_seed(config, 0)
    assert seeds[2] == methods.insecure_run_seed(config, 1) != seeds[0]


def test_resume_seeds_are_distinct_per_epoch_and_reproducible():
    values = [checkpoint.resume_seed(0, epoch) for epoch in range(1, 50)]
    assert len(set(values)) == len(values) and 0 not in values
    assert checkpoint.resume_seed(3, 7) == checkpoint.resume_seed(3, 7)
    assert checkpoint.resume_seed(3, 7) != checkpoint.resume_seed(4, 7)


def test_two_runs_with_the_same_seed_train_different_dp_models_with_the_same_ledger(
        tmp_path, monkeypatch):
    """What `scripts/train.py --seed=0` twice does: same weights' start, same ledger, new noise."""
    monkeypatch.setitem(registry._BUILDERS, "no_gradient", _no_gradient)
    data = _zeros()
    runs = [_train(dataclasses.replace(_config(tmp_path / name), model_dir=None, epochs=2), data)
            for name in ("a", "b")]
    ledgers = [(int(r.optimizer.iterations.numpy()), int(r.optimizer.noisy_steps.numpy()))
               for r in runs]
    assert ledgers[0] == ledgers[1] and ledgers[0][0] > 0
    # The initial weights are zeros in both (the model's initializer); the updates are noise.
    assert not np.allclose(runs[0].model.get_weights()[0], runs[1].model.get_weights()[0],
                           atol=1e-6)


def test_one_poisson_pipeline_serves_every_epoch_with_the_same_steps(tmp_path, monkeypatch):
    """The run builds its Poisson batches once, for all epochs (an input pipeline per epoch cost
    most of a short epoch); each epoch still takes ceil(n / b) independently sampled steps."""
    monkeypatch.setitem(registry._BUILDERS, "no_gradient", _no_gradient)
    calls = _record_sampler_argument(monkeypatch, "num_steps")
    data = _zeros()  # 64 examples, batches of 16 expected: 4 steps an epoch
    trained = _train(dataclasses.replace(_config(tmp_path / "run"), epochs=3), data)
    assert calls == [12]
    assert int(trained.optimizer.iterations.numpy()) == 12
    resumed = _train(dataclasses.replace(_config(tmp_path / "run"), epochs=5), data)
    assert calls == [12, 8]  # the two epochs left, in one pipeline of their own
    assert int(resumed.optimizer.iterations.numpy()) == 20
