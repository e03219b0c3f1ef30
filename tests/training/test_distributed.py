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

# Runs scripts or whole trainings in subprocesses: part of CI (TFDP_RUN_SLOW=1), not of the
# default `make test`.
pytestmark = pytest.mark.slow

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


def test_grouped_two_replica_training_matches_single_device(results):
    """Each replica clips whole groups (the batch splits along the group axis)."""
    mirrored, single = results["grouped"]["mirrored"], results["grouped"]["single"]
    assert mirrored["replicas_identical"]
    for m, s in zip(mirrored["weights"], single["weights"]):
        np.testing.assert_allclose(np.array(m), np.array(s), rtol=1e-4, atol=1e-6)
    for key in ("iterations", "noisy_steps", "largest_batch_size"):
        assert mirrored[key] == single[key], key
    # 16 groups in batches of 4, 2 epochs; the ledger counts groups, not examples.
    assert mirrored["iterations"] == 2 * 4 and mirrored["largest_batch_size"] == 4


def test_random_schedule_coin_is_the_same_on_every_replica(results):
    mirrored, single = results["drop"]["mirrored"], results["drop"]["single"]
    assert mirrored["replicas_identical"]
    # Same seed, same coins, whatever the number of replicas.
    assert (mirrored["noisy_steps"], mirrored["dropped_steps"]) == (
        single["noisy_steps"], single["dropped_steps"])
    assert mirrored["iterations"] + mirrored["dropped_steps"] == 3 * 4
    assert 0 < mirrored["dropped_steps"] < 12


def test_dropped_steps_leave_the_training_loss_untouched_on_every_replica(results):
    for case in ("mirrored", "single"):
        dropped = results["drop_all"][case]
        assert dropped["dropped_steps"] == 4 and dropped["iterations"] == 0
        assert dropped["loss_count"] == 0.0, case
    # With some steps dropped, both take in the same losses: those of the applied steps.
    mirrored, single = results["drop"]["mirrored"], results["drop"]["single"]
    assert mirrored["loss_count"] == single["loss_count"] < 4 * 16


def test_the_wrapper_around_adamw_with_ema_matches_single_device_and_skips_dropped_steps(results):
    # Weight decay, the moving average and the inner update run once per global step, on
    # the global private gradient (each replica hands the inner optimizer its share).
    mirrored, single = results["adamw"]["mirrored"], results["adamw"]["single"]
    assert mirrored["replicas_identical"]
    for m, s in zip(mirrored["weights"], single["weights"]):
        np.testing.assert_allclose(np.array(m), np.array(s), rtol=1e-4, atol=1e-6)
    assert mirrored["iterations"] == mirrored["inner_iterations"] == 2 * 4
    # A dropped step touches no inner variable on any replica (decided once, across them).
    mirrored, single = results["adamw_drop"]["mirrored"], results["adamw_drop"]["single"]
    assert mirrored["replicas_identical"]
    assert (mirrored["noisy_steps"], mirrored["dropped_steps"]) == (
        single["noisy_steps"], single["dropped_steps"])
    assert mirrored["iterations"] + mirrored["dropped_steps"] == 3 * 4
    assert 0 < mirrored["dropped_steps"] < 12
    assert mirrored["inner_iterations"] == mirrored["iterations"] == single["inner_iterations"]


def _free_loopback_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _result(stdout):
    lines = [l for l in stdout.splitlines() if l.startswith("RESULT ")]
    return json.loads(lines[-1][len("RESULT "):]) if lines else None


def test_two_worker_run_completes_with_the_single_worker_ledger_and_epsilon():
    script = os.path.join(HERE, "multiworker_checks.py")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    single = subprocess.run([sys.executable, script, "--single"], capture_output=True,
                            text=True, timeout=600, env=env)
    expected = _result(single.stdout)
    assert expected, single.stderr[-3000:]
    workers = [f"localhost:{_free_loopback_port()}" for _ in range(2)]
    processes = []
    for index in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        processes.append(subprocess.Popen(
            [sys.executable, script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=dict(env, TF_CONFIG=json.dumps(config))))
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=600))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    assert all(p.returncode == 0 for p in processes), outputs[0][1][-3000:]
    got = _result(outputs[0][0])
    assert got, outputs[0][1][-3000:]
    assert got["replicas"] == 2
    for key in ("iterations", "noisy_steps", "dropped_steps", "largest_batch_size", "epsilon"):
        assert got[key] == expected[key], key
