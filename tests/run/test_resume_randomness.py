"""A run resumed from its model_dir draws fresh batches and noise, never the first epochs' again.

Replaying them would release two updates with the same Poisson batch and the same noise:
their difference is a noiseless difference of clipped gradients, outside any accountant.
"""

import dataclasses

import keras
import numpy as np

from tfdp import run
from tfdp.data import Dataset
from tfdp.models import registry
from tfdp.run import checkpoint
from tfdp.run.training import train_model


def _no_gradient(shape, classes, **_):
    """Zero inputs and no bias: every clipped gradient is 0, each update the noise alone."""
    x = keras.Input(shape)
    return keras.Model(x, keras.layers.Dense(classes, use_bias=False,
                                             kernel_initializer="zeros")(x))


def _zeros():
    x = np.zeros((64, 4), np.float32)
    y = np.arange(64) % 2
    return Dataset(name="zeros", x_train=x, y_train=y, x_test=x[:8], y_test=y[:8],
                   class_names=("a", "b"))


def test_resumed_epochs_draw_new_noise_and_new_batches(tmp_path, monkeypatch):
    monkeypatch.setitem(registry._BUILDERS, "no_gradient", _no_gradient)  # this test only
    seeds = []
    original = Dataset.poisson_batches

    def recording(self, batch_size, *, seed=None, **kwargs):
        seeds.append(seed)
        return original(self, batch_size, seed=seed, **kwargs)

    monkeypatch.setattr(Dataset, "poisson_batches", recording)
    config = run.RunConfig(dataset="zeros", model="no_gradient", noise_multiplier=1.0,
                           epochs=1, batch_size=16, learning_rate=1.0,
                           model_dir=str(tmp_path / "run")).validated()
    data = _zeros()
    first = train_model(config, data, log=lambda _: None, validate=False)
    epoch_1 = first.model.get_weights()[0].copy()
    assert np.abs(epoch_1).max() > 0  # the noise moved the weights
    resumed = train_model(dataclasses.replace(config, epochs=2), data, log=lambda _: None,
                          validate=False)
    epoch_2 = resumed.model.get_weights()[0] - epoch_1
    assert resumed.optimizer.iterations.numpy() == 2 * first.optimizer.iterations.numpy()
    # The resumed epoch's noise is not the first epoch's noise again.
    assert not np.allclose(epoch_2, epoch_1, atol=1e-6)
    # Nor are its batches: the sampler gets a seed of its own, derived from (seed, epoch).
    assert seeds == [0, checkpoint.resume_seed(0, 1)] and seeds[1] != seeds[0]


def test_resume_seeds_are_distinct_per_epoch_and_reproducible():
    values = [checkpoint.resume_seed(0, epoch) for epoch in range(1, 50)]
    assert len(set(values)) == len(values) and 0 not in values
    assert checkpoint.resume_seed(3, 7) == checkpoint.resume_seed(3, 7)
    assert checkpoint.resume_seed(3, 7) != checkpoint.resume_seed(4, 7)
