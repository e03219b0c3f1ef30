"""A fresh process that loads every artifact tfdp wrote, seeded as the first, replays nothing.

The artifacts: a `.keras` file, a `tf.train` checkpoint of the model and the optimizer, a
SavedModel export and the privacy record. The new process seeds Python, NumPy, TensorFlow
and Keras exactly as the training process did, trains on (its updates are the noise alone)
and samples batches: no noise vector and no batch of the first process comes back.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # two TensorFlow processes

HERE = os.path.dirname(os.path.abspath(__file__))


def _run(role, folder):
    done = subprocess.run([sys.executable, os.path.join(HERE, "fresh_process_checks.py"), role,
                           str(folder)], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


def test_a_fresh_process_with_every_artifact_and_the_same_seeds_replays_nothing(tmp_path):
    first = _run("train", tmp_path)
    again = _run("resume", tmp_path)
    noise_first, noise_again = np.array(first["noise"]), np.array(again["noise"])
    assert noise_first.shape[0] == 3 and noise_again.shape[0] == 6
    assert np.all(np.abs(noise_first).max(axis=1) > 0)  # the updates are the noise
    for vector in noise_again:
        assert np.abs(noise_first - vector).max(axis=1).min() > 1e-6
        assert np.abs(noise_first + vector).max(axis=1).min() > 1e-6
    assert not set(map(tuple, again["batches"])) & set(map(tuple, first["batches"]))
