"""scripts/benchmark.py and tfdp.training.benchmark: the zoo benchmark's measuring and its report.

The in-process tests train a zoo model for a couple of tiny steps; the slow one runs the
script with --quick over two small zoo models (four subprocesses) and reads its JSON.
"""

import json
import os
import subprocess
import sys

import pytest

from tfdp.training import benchmark as bench

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_measure_nodp_and_fast_path_in_process():
    nodp = bench.measure("mlp", "nodp", num_examples=8, batch_size=4, epochs=2)
    fast = bench.measure("mlp", "tfdp_fast", num_examples=8, batch_size=4, epochs=1)
    for result in (nodp, fast):
        assert result["batch_size"] == 4 and result["num_examples"] == 8
        assert result["steps_per_epoch"] == 2
        assert result["seconds_per_epoch"] > 0 and result["peak_rss_mb"] > 0
    assert len(nodp["epoch_seconds"]) == 3  # one warm-up epoch, two timed
    assert nodp["seconds_per_epoch"] == min(nodp["epoch_seconds"][1:])
    assert "plan" not in nodp
    plan = fast["plan"]
    if plan != bench.PLAN_UNAVAILABLE:
        assert isinstance(plan, dict) and len(plan) == 3, plan  # three Dense layers
        assert all(path.startswith("rule:") for path in plan.values()), plan
        assert fast["plan_counts"] == {"rule": 3, "local": 0, "jacobian": 0}


def test_measure_token_model_with_the_zoo_defaults_scaled_down():
    result = bench.measure("text_cnn", "tfdp_fast", num_examples=4, batch_size=4, epochs=1,
                           warmup_epochs=0)
    assert result["steps_per_epoch"] == 1 and len(result["epoch_seconds"]) == 1


def test_unknown_configuration_is_refused():
    import keras

    with pytest.raises(ValueError, match="tfdp_fast"):
        bench.compile_for("tfp_generic", keras.Sequential([keras.Input((2,)),
                                                           keras.layers.Dense(2)]))


def _result(seconds, peak, before=100.0, **extra):
    return dict(seconds_per_epoch=seconds, peak_rss_mb=peak, rss_before_fit_mb=before, **extra)


def test_compare_and_table():
    results = {"nodp": _result(1.0, 200.0),
               "tfdp_fast": _result(1.5, 300.0, plan={"conv": "rule:ConvRule", "lstm": "local"}),
               "tfdp_optimizer": {"error": "boom"}}
    ratios = bench.compare(results)
    assert ratios == {"tfdp_fast": {"time_ratio": 1.5, "memory_ratio": 1.5,
                                    "training_memory_ratio": 2.0}}
    report = {"models": {"lstm": {"batch_size": 4, "num_examples": 8, "results": results,
                                  "ratios": ratios}},
              "unavailable": {"tfp_generic": "not run on Keras 3: Keras 2 only"}}
    text = "\n".join(bench.format_table(report))
    row = next(line for line in text.splitlines() if line.startswith("lstm"))
    assert "1.50" in row and row.rstrip().endswith("1/1/0")
    assert "lstm (local)" in text and "tfdp_optimizer failed: boom" in text
    assert "tfp_generic: unavailable (not run on Keras 3" in text
    assert bench.compare({"nodp": {"error": "x"}, "tfdp_fast": _result(1.0, 1.0)}) == {}
    assert bench.plan_counts("plan unavailable") is None


def test_script_runs_nodp_and_fast_path_in_alternating_rounds():
    from tfdp.scripts import benchmark as script

    assert script._order(["nodp", "tfdp_fast", "tfdp_optimizer"], 2) == [
        "nodp", "tfdp_fast", "tfdp_optimizer", "tfdp_fast", "nodp"]
    assert script._order(["nodp", "tfdp_fast"], 1) == ["nodp", "tfdp_fast"]
    best = script._keep_best(_result(2.0, 300.0), _result(1.0, 250.0))
    assert best["seconds_per_epoch"] == 1.0 and best["peak_rss_mb"] == 300.0
    assert best["runs_seconds_per_epoch"] == [2.0, 1.0]
    assert script._keep_best({"error": "x"}, _result(1.0, 1.0))["seconds_per_epoch"] == 1.0


@pytest.mark.slow
def test_quick_run_over_two_zoo_models(tmp_path, results_page):
    output = tmp_path / "benchmark.json"
    done = subprocess.run(
        [sys.executable, os.path.join(REPO, "scripts", "benchmark.py"), "--quick",
         "--models=tutorial_cnn,text_cnn", "--batch_size=8", f"--output={output}"],
        cwd=REPO, capture_output=True, text=True, timeout=1200,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(output.read_text())
    assert list(report["models"]) == ["tutorial_cnn", "text_cnn"]
    assert report["settings"]["quick"] and report["settings"]["epochs"] == 1
    assert set(report["unavailable"]) == {"tfp_vectorized", "tfp_generic", "tfp_dpsequential"}
    for name, entry in report["models"].items():
        assert entry["batch_size"] == 8 and entry["num_examples"] == 16  # two batches
        assert set(entry["results"]) == {"nodp", "tfdp_fast", "tfdp_fast_grid"}, entry["results"]
        for config in ("tfdp_fast", "tfdp_fast_grid"):  # the grid noise's cost is measured too
            ratios = entry["ratios"][config]
            assert ratios["time_ratio"] > 0 and ratios["memory_ratio"] > 0
        assert isinstance(entry["plan"], dict) and entry["plan"], entry.get("plan")
        assert sum(entry["plan_counts"].values()) == len(entry["plan"])
        assert any(line.startswith(name) for line in done.stdout.splitlines())
    assert report["models"]["text_cnn"]["plan"]["embedding"].startswith("rule:")
    assert "tfdp_vs_nodp_ratio=" in done.stdout
    assert "unavailable" in done.stdout
    # The results page renders this very JSON (as `make results-page` renders docs/results.md).
    page = results_page.render(None, report)
    assert "| tutorial_cnn | 8 |" in page and "| text_cnn | 8 |" in page and "--quick" in page


@pytest.mark.slow
def test_unknown_model_is_a_usage_error():
    done = subprocess.run(
        [sys.executable, os.path.join(REPO, "scripts", "benchmark.py"), "--models=vgg"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert done.returncode != 0
    assert "tutorial_cnn" in done.stdout + done.stderr
