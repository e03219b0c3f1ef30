"""A PrivacyPlan with mechanism="banded_mf": sampler, optimizer, callback and statement agree."""

import keras
import numpy as np
import pytest

import tfdp
from tfdp.accounting.banded_mf import banded_mf_epsilon


def _plan(**kwargs):
    return tfdp.PrivacyPlan(num_examples=400, batch_size=20, epochs=2, l2_norm_clip=1.0,
                            mechanism="banded_mf", bands=4, **kwargs)


def test_plan_calibrates_and_trains_with_cyclic_batches_and_banded_noise():
    plan = _plan(target_epsilon=3.0)
    assert plan.steps == 40 and plan.steps_per_epoch == 20
    assert plan.epsilon().epsilon == pytest.approx(
        banded_mf_epsilon(400, 20, plan.noise_multiplier, 40, 4, 1e-5), rel=1e-9)
    assert 2.9 < plan.epsilon().epsilon <= 3.0
    x = np.random.default_rng(0).normal(size=(400, 5)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    model = plan.make_private(keras.Sequential([keras.Input((5,)), keras.layers.Dense(2)]))
    optimizer = plan.optimizer("sgd", learning_rate=0.1)
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction=None))
    callback = plan.callback()
    batches = plan.batches(x, y)
    assert tfdp.data.sampling_tag(batches).bands == 4
    model.fit(batches, epochs=plan.fit_epochs, callbacks=[callback], verbose=0)
    assert int(optimizer.iterations.numpy()) == 40
    assert int(optimizer.banded_noise.steps.numpy()) == 40
    spent = tfdp.accounting.epsilon_from_ledger(optimizer, 400, batch_size=20)
    assert spent.epsilon == pytest.approx(plan.epsilon().epsilon, rel=1e-9)
    assert spent.accounted_steps == 10 and spent.bands == 4
    assert "cyclic Poisson" in plan.statement


def test_plan_refusals():
    with pytest.raises(ValueError, match="bands=4"):
        tfdp.PrivacyPlan(num_examples=400, batch_size=20, epochs=2, l2_norm_clip=1.0,
                         mechanism="banded_mf", noise_multiplier=1.0)
    with pytest.raises(ValueError, match="batch_size \\* bands"):
        tfdp.PrivacyPlan(num_examples=400, batch_size=20, epochs=2, l2_norm_clip=1.0,
                         mechanism="banded_mf", bands=21, noise_multiplier=1.0)
    with pytest.raises(ValueError, match="per patient|privacy_unit='example'"):
        tfdp.PrivacyPlan(num_examples=400, batch_size=20, epochs=2, l2_norm_clip=1.0,
                         mechanism="banded_mf", bands=4, noise_multiplier=1.0,
                         privacy_unit="patient")
    with pytest.raises(ValueError, match="banded_mf"):
        tfdp.PrivacyPlan(num_examples=400, batch_size=20, epochs=2, l2_norm_clip=1.0,
                         bands=4, noise_multiplier=1.0)
    # Plain Poisson batches with the banded optimizer: fit refuses them.
    plan = _plan(noise_multiplier=1.0)
    x, y = np.zeros((400, 5), "float32"), np.zeros(400, "int32")
    model = plan.make_private(keras.Sequential([keras.Input((5,)), keras.layers.Dense(2)]))
    model.compile(optimizer=plan.optimizer("sgd", learning_rate=0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                                  reduction=None))
    with pytest.raises(ValueError, match="cyclic_poisson_batches"):
        model.fit(tfdp.data.poisson_batches(x, y, 20), epochs=1, verbose=0)
