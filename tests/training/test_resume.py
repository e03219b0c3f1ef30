"""Interruption: a run SIGKILLed mid-epoch and resumed ends with the uninterrupted run's step
count and an epsilon accounted over every step its ledger holds (the random schedule's coins
after the resume are drawn afresh, from a new secret key, so its noisy count is its own)."""

import json
import os
import signal
import subprocess
import sys

import pytest

import tfdp

# Runs scripts or whole trainings in subprocesses: part of CI (TFDP_RUN_SLOW=1), not of the
# default `make test`.
pytestmark = pytest.mark.slow

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


def _run(*args):
    done = subprocess.run([sys.executable, os.path.join(HERE, "resume_checks.py"), *args],
                          capture_output=True, text=True, timeout=600, env=ENV)
    lines = [l for l in done.stdout.splitlines() if l.startswith("RESULT ")]
    return done.returncode, (json.loads(lines[-1][7:]) if lines else None), done.stderr


@pytest.mark.parametrize("path", [[], ["--fast"]], ids=["optimizer_path", "fast_path"])
def test_backup_and_restore_resumes_the_ledger_after_sigkill(tmp_path, path):
    _, uninterrupted, err = _run(str(tmp_path / "full"), *path)
    assert uninterrupted, err[-3000:]
    code, killed, _ = _run(str(tmp_path / "killed"), "--kill_at=2,5", *path)
    assert code == -signal.SIGKILL and killed is None  # really died mid-epoch 3 of 4
    _, resumed, err = _run(str(tmp_path / "killed"), *path)
    assert resumed, err[-3000:]
    steps = resumed["iterations"] + resumed["dropped_steps"]
    assert steps == uninterrupted["iterations"] + uninterrupted["dropped_steps"]
    assert resumed["noisy_steps"] + resumed["dropped_steps"] == steps
    # The epsilon of every step the ledger holds, the ones before the kill included.
    expected = tfdp.compute_epsilon(96, 8, 1.0, steps=steps, noisy_steps=resumed["noisy_steps"],
                                    noise_schedule="random", noise_probability=0.6,
                                    on_skip="drop", delta=1e-5, sampling="shuffle")
    assert resumed["epsilon"] == pytest.approx(expected.epsilon)
    assert uninterrupted["dropped_steps"] > 0


def _train(model_dir, epochs=6, kill_after_epoch=None):
    command = [sys.executable, os.path.join(ROOT, "scripts", "train.py"), "--dataset=digits",
               f"--epochs={epochs}", "--batch_size=32", "--noise_multiplier=1.1",
               "--max_train_examples=320", f"--model_dir={model_dir}", "--seed=3"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True, env=ENV)
    try:
        for line in process.stdout:
            if kill_after_epoch and line.startswith(f"epoch {kill_after_epoch}/"):
                process.send_signal(signal.SIGKILL)
                break
        process.wait(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
    return process.returncode


def test_train_script_killed_and_rerun_ends_with_the_same_ledger_and_epsilon(tmp_path):
    assert _train(tmp_path / "full") == 0
    assert _train(tmp_path / "killed", kill_after_epoch=2) == -signal.SIGKILL
    assert _train(tmp_path / "killed") == 0
    full = json.loads((tmp_path / "full" / "metrics.json").read_text())
    resumed = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    assert resumed["ledger"] == full["ledger"]
    assert resumed["privacy"]["epsilon"] == pytest.approx(full["privacy"]["epsilon"])
