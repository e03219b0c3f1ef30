"""cyclic_poisson_batches: step t draws only from fold t mod b, at rate B * b / n, tagged."""

import numpy as np
import pytest

import tfdp
from tfdp.data.cyclic_poisson import cyclic_poisson_folds, fold_key

N, BATCH, BANDS = 3000, 50, 4


def test_step_t_samples_only_fold_t_mod_b_at_the_cyclic_rate():
    key = fold_key(7)
    folds = cyclic_poisson_folds(N, BANDS, key)
    x = np.arange(N)
    ds = tfdp.data.cyclic_poisson_batches(x, None, BATCH, BANDS, num_steps=40, first_step=8,
                                          key=key)
    counts = np.zeros(BANDS)
    for i, batch in enumerate(ds):
        t = 8 + i
        members = batch.numpy()
        assert set(folds[members]) <= {t % BANDS}, t
        counts[t % BANDS] += len(members)
    # Each fold holds about n / b examples, each taken with q = B * b / n: B expected per step.
    rate = counts / (10 * np.bincount(folds, minlength=BANDS))
    np.testing.assert_allclose(rate, BATCH * BANDS / N, rtol=0.12)
    tag = tfdp.data.sampling_tag(ds)
    assert (tag.bands, tag.num_units, tag.batch_size, tag.steps_per_pass) == (BANDS, N, BATCH, 40)


def test_refusals_and_epoch_length():
    x = np.zeros([100, 2])
    with pytest.raises(ValueError, match="bands"):
        tfdp.data.cyclic_poisson_batches(x, None, 30, 4)  # 30 * 4 > 100
    with pytest.raises(ValueError, match="multiple of bands"):
        tfdp.data.cyclic_poisson_batches(x, None, 10, 4, num_steps=6)
    with pytest.raises(ValueError, match="first_step"):
        tfdp.data.cyclic_poisson_batches(x, None, 10, 4, first_step=3)
    # ceil(100 / 10) = 10 steps, rounded up to whole cycles of 4.
    assert tfdp.data.cyclic_steps_per_epoch(100, 10, 4) == 12


def test_accounting_refuses_batches_of_the_other_sampler():
    x, y = np.zeros([400, 2]), np.zeros([400])
    cyclic = tfdp.data.cyclic_poisson_batches(x, y, 20, 4)
    plain = tfdp.data.poisson_batches(x, y, 20)
    kwargs = dict(steps=40, delta=1e-5)
    with pytest.raises(ValueError, match="cyclic_poisson_batches"):
        tfdp.compute_epsilon(400, 20, 1.0, mechanism="banded_mf", bands=4, batches=plain,
                             **kwargs)
    with pytest.raises(ValueError, match="mechanism='banded_mf'"):
        tfdp.compute_epsilon(400, 20, 1.0, batches=cyclic, **kwargs)
    good = tfdp.compute_epsilon(400, 20, 1.0, mechanism="banded_mf", bands=4, batches=cyclic,
                                **kwargs)
    assert good.bands == 4
