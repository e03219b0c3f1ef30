"""Exact data-dependent counts stay in memory: no saved file holds them (issue #29, item 6).

The largest realized batch and the skipped (non-finite) examples are diagnostics of this
process; their two old optimizer slots stay as retired placeholders holding 0, and the
accounting fallback that read the largest batch refuses a restored optimizer.
"""

import io
import zipfile

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdp

BATCH = 37  # a batch size no other saved variable holds
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)


def _trained(tmp_path, **dp_arguments):
    """A model after one step on a batch of 37 with one non-finite example, saved."""
    keras.utils.set_random_seed(0)
    model = tfdp.make_private(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]))
    optimizer = tfdp.DPKerasSGDOptimizer(l2_norm_clip=1.0, noise_multiplier=1.0,
                                         on_nonfinite="skip", **dp_arguments)
    model.compile(optimizer=optimizer, loss=LOSS)
    x = np.ones((BATCH, 3), np.float32)
    x[5, 0] = np.inf
    model.fit(x, np.zeros(BATCH, np.int64), batch_size=BATCH, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    return model, optimizer, path


def _saved_optimizer_variables(path):
    with zipfile.ZipFile(path) as archive:
        weights = h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r")
        group = weights["optimizer"]["vars"]
        return [np.asarray(group[str(i)]) for i in range(len(group))]


def test_no_saved_file_holds_the_largest_batch_or_the_skipped_examples(tmp_path):
    model, optimizer, path = _trained(tmp_path)
    # The in-memory diagnostics still count (this process saw the step).
    assert int(optimizer.largest_batch_size.numpy()) == BATCH
    assert int(optimizer.skipped_examples.numpy()) == 1
    saved = _saved_optimizer_variables(path)
    names = [v.name for v in optimizer.variables]
    for name in ("dp_largest_batch_size", "dp_skipped_examples"):  # the retired slots
        assert saved[names.index(name)] == 0
    assert not any(np.any(v == BATCH) for v in saved)
    # tf.train.Checkpoint (BackupAndRestore, tfdp.run's model_dir) sees nothing more either.
    written = tf.train.Checkpoint(optimizer=optimizer).write(str(tmp_path / "ckpt"))
    reader = tf.train.load_checkpoint(written)
    values = [np.asarray(reader.get_tensor(name)) for name in reader.get_variable_to_shape_map()
              if name != "_CHECKPOINTABLE_OBJECT_GRAPH"]
    counters = sorted(int(v) for v in values if v.dtype == np.int64)
    # Retired slots, dropped steps; iterations, noisy steps, the inner optimizer's iterations.
    assert counters == [0, 0, 0, 1, 1, 1]
    assert not any(np.any(v == BATCH) for v in values)
    # A restored model starts its in-memory counts at zero.
    loaded = keras.models.load_model(path)
    assert int(loaded.optimizer.iterations.numpy()) == 1
    assert int(loaded.optimizer.largest_batch_size.numpy()) == 0
    assert int(loaded.optimizer.skipped_examples.numpy()) == 0


def test_a_file_saved_with_counts_in_the_retired_slots_loads_and_holds_zeros():
    optimizer = tfdp.DPKerasSGDOptimizer(l2_norm_clip=1.0, noise_multiplier=1.0)
    names = [v.name for v in optimizer.variables]
    store = {str(i): v.numpy() for i, v in enumerate(optimizer.variables)}
    store[str(names.index("dp_largest_batch_size"))] = np.int64(BATCH)  # as files saved before
    store[str(names.index("dp_skipped_examples"))] = np.int64(3)
    store[str(names.index("iteration"))] = np.int64(5)
    optimizer.load_own_variables(store)
    assert int(optimizer.iterations.numpy()) == 5
    assert [int(v.numpy()) for v in optimizer.variables
            if v.name in ("dp_largest_batch_size", "dp_skipped_examples")] == [0, 0]


def test_accounting_a_restored_optimizer_without_a_stated_batch_size_is_refused(tmp_path):
    model, optimizer, path = _trained(tmp_path)
    # In the process that took the steps, the largest batch seen is the shuffle batch size.
    here = tfdp.accounting.epsilon_from_ledger(optimizer, 1000, sampling="shuffle")
    reference = tfdp.compute_epsilon(1000, BATCH, 1.0, steps=1, sampling="shuffle")
    assert here.epsilon == pytest.approx(reference.epsilon, rel=1e-12)
    # Resumed in a new process (here: loaded), it would account with a smaller batch.
    loaded = keras.models.load_model(path)
    with pytest.raises(ValueError, match="batch_size=.*expected_batch_size"):
        tfdp.accounting.epsilon_from_ledger(loaded.optimizer, 1000, sampling="shuffle")
    x, y = np.ones((1000, 3), np.float32), np.zeros(1000, np.int64)
    with pytest.raises(ValueError, match="this process saw 0"):
        loaded.fit(x, y, batch_size=4, verbose=0,
                   callbacks=[tfdp.PrivacyCallback(1000, sampling="shuffle")])
    assert int(loaded.optimizer.iterations.numpy()) == 1  # refused before training on
    stated = tfdp.accounting.epsilon_from_ledger(loaded.optimizer, 1000, sampling="shuffle",
                                                 batch_size=BATCH)
    steps = int(loaded.optimizer.iterations.numpy())
    assert stated.epsilon == pytest.approx(tfdp.compute_epsilon(
        1000, BATCH, 1.0, steps=steps, sampling="shuffle").epsilon, rel=1e-12)

    # With expected_batch_size the batch size is a setting, and a restored run accounts as before.
    _, _, path = _trained(tmp_path, expected_batch_size=BATCH)
    result = tfdp.accounting.epsilon_from_ledger(keras.models.load_model(path).optimizer, 1000)
    assert result.epsilon == pytest.approx(
        tfdp.compute_epsilon(1000, BATCH, 1.0, steps=1).epsilon, rel=1e-12)
