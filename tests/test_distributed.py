"""DP training under tf.distribute.MirroredStrategy with 2 logical CPU replicas.

The measurements run in a subprocess (logical devices must be set before TensorFlow
starts); this module asserts on them.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def results():
    done = subprocess.run([sys.executable, os.path.join(HERE, "distributed_checks.py")],
                          capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    lines = [l for l in done.stdout.splitlines() if l.startswith("RESULT ")]
    assert lines, done.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


def test_two_replicas_run(results):
    assert results["replicas"] == 2


def test_a_two_replica_step_carries_one_noise_draw_not_one_per_replica(results):
    sigma, n = 3.0, 100 * 100
    std = results["noise"]["std"]
    # One draw: std sigma (relative standard error 1/sqrt(2n)); one per replica would be sqrt(2) sigma.
    assert abs(std / sigma - 1) < 5 / np.sqrt(2 * n)
    assert results["noise"]["replicas_identical"]
    assert results["noise"]["noisy_steps"] == 1


@pytest.mark.parametrize("path", ["optimizer", "fast"])
def test_noiseless_two_replica_training_matches_single_device(results, path):
    mirrored, single = results[path]["mirrored"], results[path]["single"]
    assert mirrored["replicas_identical"]
    for m, s in zip(mirrored["weights"], single["weights"]):
        np.testing.assert_allclose(np.array(m), np.array(s), rtol=1e-4, atol=1e-6)
    # Counters count global steps on the global batch.
    for key in ("iterations", "noisy_steps", "dropped_steps", "largest_batch_size"):
        assert mirrored[key] == single[key], key
    assert mirrored["iterations"] == 2 * 4 and mirrored["largest_batch_size"] == 16


def test_random_schedule_coin_is_the_same_on_every_replica(results):
    mirrored, single = results["drop"]["mirrored"], results["drop"]["single"]
    assert mirrored["replicas_identical"]
    # Same seed, same coins, whatever the number of replicas.
    assert (mirrored["noisy_steps"], mirrored["dropped_steps"]) == (
        single["noisy_steps"], single["dropped_steps"])
    assert mirrored["iterations"] + mirrored["dropped_steps"] == 3 * 4
    assert 0 < mirrored["dropped_steps"] < 12
