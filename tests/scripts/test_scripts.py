"""Tests for scripts/train.py and scripts/compare.py: real runs on tiny settings, bad flags.

The scripts run in this process through their entry points (conftest's `run_script`)."""

import json
import math
import os

import numpy as np
import pytest

import tfdp

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tfdp import run  # noqa: E402  (the library scripts/train.py runs)

# Whole script runs (compare.py trains 23 models): part of CI (TFDP_RUN_SLOW=1), not of the
# default `make test`.
pytestmark = pytest.mark.slow

# ----- train.py -----

def test_train_script_runs_and_writes_metrics(tmp_path, run_script):
    metrics = tmp_path / "m.json"
    result = run_script("train.py", "--dataset=digits", "--mechanism=gaussian",
                        "--noise_schedule=random", "--noise_probability=0.5",
                        "--noise_multiplier=1.0", "--epochs=1", "--batch_size=32",
                        "--max_train_examples=160", "--max_test_examples=60",
                        "--learning_rate=0.5", f"--metrics_path={metrics}")
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
    (["--dataset=pneumonia_mnist", "--data_dir=/nonexistent/pm", "--noise_multiplier=1"],
     "does not exist.*train_images"),
    (["--mechanism=laplace", "--l2_norm_clip=1", "--noise_multiplier=1"], "l1_norm_clip"),
    (["--privacy_unit=patient", "--mechanism=none"], "--privacy_unit=patient samples and clips"),
    (["--max_examples_per_patient=2", "--noise_multiplier=1"], "needs --privacy_unit=patient"),
])
def test_train_script_bad_flags_fail_with_a_clear_message(args, message, run_script):
    import re

    result = run_script("train.py", *args, "--epochs=1")
    assert result.returncode != 0
    assert re.search(message, result.stderr), result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_train_config_checks():
    with pytest.raises(ValueError, match="mechanism=none"):
        run.TrainConfig(mechanism="none", noise_multiplier=1.0).resolved()
    with pytest.raises(ValueError, match="noise_probability applies to --noise_schedule=random"):
        run.TrainConfig(noise_multiplier=1.0, noise_probability=0.5).resolved()
    resolved = run.TrainConfig(mechanism="laplace", noise_multiplier=2.0).resolved()
    assert resolved.l1_norm_clip == 1.0 and resolved.l2_norm_clip is None


def test_resumed_run_continues_the_ledger(tmp_path):
    base = dict(dataset="digits", mechanism="gaussian", noise_schedule="random",
                noise_probability=0.5, noise_multiplier=1.0, batch_size=32,
                max_train_examples=128, max_test_examples=40, learning_rate=0.5,
                model_dir=str(tmp_path / "run"), sampling="shuffle")
    quiet = lambda *_: None  # noqa: E731
    first = run.train_and_evaluate(run.TrainConfig(epochs=1, **base), log=quiet)
    first_noisy = int(first.model.optimizer.noisy_steps.numpy())
    first_steps = first.ledger["steps"]
    assert first_steps == 4
    second = run.train_and_evaluate(run.TrainConfig(epochs=2, **base), log=quiet)
    optimizer = second.model.optimizer
    assert [h["epoch"] for h in second.history] == [2]  # only the missing epoch was trained
    # The restored counters continue: totals = first run + the second epoch's own counts.
    assert int(optimizer.noisy_steps.numpy()) == first_noisy + second.history[0]["noisy_steps"]
    assert int(optimizer.iterations.numpy()) + int(optimizer.dropped_steps.numpy()) == 2 * first_steps
    assert second.ledger["steps"] == 2 * first_steps
    # Resuming with other privacy settings would make the ledger wrong: refused.
    with pytest.raises(ValueError, match="other settings.*noise_multiplier"):
        run.train_and_evaluate(
            run.TrainConfig(epochs=3, **{**base, "noise_multiplier": 2.0}), log=quiet)
    if second.ledger["noisy_steps"] < second.ledger["steps"]:
        # A released noiseless step: no formal guarantee, whatever the counts.
        assert math.isinf(second.privacy.epsilon)


def _statement(record):
    return " ".join(record["privacy"]["statement"].split())


def _xray_folder(root):
    """Chest X-ray folders named as in the public collection: several images per child."""
    import tensorflow as tf

    names = {"NORMAL": ["IM-0115-0001", "IM-0115-0002", "IM-0117-0001",
                        "NORMAL2-IM-0135-0001", "NORMAL2-IM-0135-0002-0001"],
             "PNEUMONIA": ["person1_virus_6", "person1_virus_8", "person12_bacteria_47",
                           "person12_bacteria_48", "person12_bacteria_49", "person3_virus_1"]}
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label, files in names.items():
            for name in files:
                path = root / split / label / f"{name}.jpeg"
                path.parent.mkdir(parents=True, exist_ok=True)
                pixels = rng.integers(0, 255, size=(12, 12, 1)).astype(np.uint8)
                tf.io.write_file(str(path), tf.io.encode_jpeg(pixels))
    return root


def test_train_script_per_patient_on_chest_xray_folders_resumes_its_ledger(tmp_path, run_script):
    data_dir = _xray_folder(tmp_path / "xray")
    args = ["--dataset=chest_xray", f"--data_dir={data_dir}", "--image_size=12",
            "--model=mlp", "--privacy_unit=patient", "--max_examples_per_patient=2",
            "--noise_multiplier=1.2", "--batch_size=3", "--learning_rate=0.5",
            f"--model_dir={tmp_path / 'run'}"]
    first = run_script("train.py", *args, "--epochs=1")
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_script("train.py", *args, "--epochs=2")
    assert second.returncode == 0, second.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    # 11 images of 6 children: person1, person12, person3, IM-0115, IM-0117, NORMAL2-IM-0135.
    steps = 2 * math.ceil(6 / 3)
    assert record["ledger"]["steps"] == steps
    assert record["privacy"]["accountant"] == "pld"  # train.py's default accountant
    want = tfdp.compute_epsilon(6, 3, 1.2, steps=steps, privacy_unit="patient",
                                accountant="pld")
    assert record["privacy"]["epsilon"] == pytest.approx(want.epsilon, rel=1e-9)
    assert record["privacy"]["privacy_unit"] == "patient"
    statement = _statement(record)
    assert "6 patients hold the 11 training examples" in statement
    assert "patient ids from the file names" in statement
    assert "at most 2 of their examples" in statement
    # Resuming as an example-level run would change what the ledger means: refused.
    third = run_script("train.py", *args[:4], *args[6:], "--epochs=3")
    assert third.returncode != 0 and "privacy_unit" in third.stderr


def test_train_script_residual_perturbation_one_epoch(tmp_path, run_script):
    metrics = tmp_path / "rp.json"
    result = run_script("train.py", "--dataset=digits", "--mechanism=residual_perturbation",
                        "--gamma=0.5", "--epochs=1", "--batch_size=32", "--max_train_examples=160",
                        "--max_test_examples=60", "--learning_rate=0.01", "--optimizer=adam",
                        f"--metrics_path={metrics}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "epoch 1/1" in result.stdout and "Residual perturbation" in result.stdout
    record = json.loads(metrics.read_text())
    assert record["method"] == "Residual perturbation"
    assert record["config"]["model"] == "residual_perturbation_resnet"
    assert record["config"]["gamma"] == 0.5 and record["config"]["residual_noise"] == "additive"
    assert 0.0 <= record["utility"]["accuracy"] <= 1.0
    assert record["ledger"]["steps"] == 5  # ceil(160 / 32) Poisson-sampled steps
    assert record["privacy"]["epsilon"] == "inf"
    assert record["privacy"]["epsilon_claimed"] is None
    text = _statement(record)
    assert "No formal guarantee for this training as run" in text and "gamma = 0.5" in text


def test_train_script_neuraldp_one_epoch(tmp_path, run_script):
    metrics = tmp_path / "nd.json"
    result = run_script("train.py", "--dataset=digits", "--mechanism=neuraldp",
                        "--target_epsilon=3", "--epochs=1", "--batch_size=32",
                        "--max_train_examples=160", "--max_test_examples=60",
                        "--learning_rate=0.01", "--optimizer=adam",
                        f"--metrics_path={metrics}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "epoch 1/1" in result.stdout and "not a guarantee" in result.stdout
    record = json.loads(metrics.read_text())
    assert record["method"] == "NeuralDP" and record["config"]["model"] == "neuraldp"
    assert record["config"]["activation_clip_norm"] == 1.0
    assert record["ledger"]["steps"] == 5
    # The formal field is infinite; the (calibrated) claim sits in its own labelled field.
    assert record["privacy"]["epsilon"] == "inf"
    assert 3.0 * 0.97 <= record["privacy"]["epsilon_claimed"] <= 3.0 * 1.0001
    assert "withdrawn" in record["privacy"]["epsilon_claimed_by"]
    text = _statement(record)
    assert "does not cover" in text and "the layers before the privatized one" in text


def test_train_config_checks_of_the_other_methods():
    with pytest.raises(ValueError, match="needs --gamma"):
        run.TrainConfig(mechanism="residual_perturbation").resolved()
    with pytest.raises(ValueError, match="no computed epsilon"):
        run.TrainConfig(mechanism="residual_perturbation", gamma=0.5,
                          target_epsilon=2.0).resolved()
    with pytest.raises(ValueError, match="--gamma belongs to --mechanism=residual_perturbation"):
        run.TrainConfig(noise_multiplier=1.0, gamma=0.5).resolved()
    with pytest.raises(ValueError, match="trains its own model"):
        run.TrainConfig(mechanism="neuraldp", noise_multiplier=1.0, model="mlp").resolved()
    with pytest.raises(ValueError, match="activation clip is --activation_clip_norm"):
        run.TrainConfig(mechanism="neuraldp", noise_multiplier=1.0, l2_norm_clip=1.0).resolved()
    with pytest.raises(ValueError, match="exactly one of --noise_multiplier"):
        run.TrainConfig(mechanism="neuraldp").resolved()
    resolved = run.TrainConfig(mechanism="neuraldp", noise_multiplier=2.0).resolved()
    assert resolved.activation_clip_norm == 1.0 and not resolved.has_formal_guarantee
    assert not resolved.uses_dp_optimizer and resolved.is_private


# ----- compare.py -----

from tfdp.run import comparison, comparison_plot  # noqa: E402  (scripts/compare.py's library)


def test_compare_runs_every_method_and_writes_outputs(tmp_path, run_script, results_page):
    out = tmp_path / "results"
    result = run_script("compare.py", "--epochs=1", "--max_train_examples=160",
                        "--max_test_examples=80", "--batch_size=32", "--target_epsilon=2",
                        "--sweep_epsilons=1,4", "--lira_shadows=2", "--audit_canaries=40",
                        f"--output_dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    # Progress is printed per run, then the table with all five methods.
    assert "[1/" in result.stdout and "Comparison at target epsilon 2" in result.stdout
    names = ["No-DP", "Gaussian RegN-DP-SGD", "Gaussian RanN-DP-SGD",
             "Gaussian RanN-DP-SGD (drop)", "Laplace RegN-DP-SGD", "Laplace RanN-DP-SGD",
             "Residual perturbation", "NeuralDP", "Gaussian RegN-DP-SGD per patient"]
    for name in names:
        assert name in result.stdout
    import csv

    with open(out / "comparison.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == names
    # The results page renders this very JSON (as `make results-page` renders docs/results.md).
    page = results_page.render(json.loads((out / "comparison.json").read_text()), None)
    assert all(f"| {name} |" in page for name in names) and "epsilon 4" in page
    for column in ("accuracy", "precision", "recall", "f1", "epsilon", "epsilon_noisy_steps_only",
                   "epsilon_claimed",
                   "noisy_steps_per_epoch", "noisy_steps_percent", "seconds_per_epoch",
                   "attack_auc", "attack_advantage", "epsilon_lower_bound", "train_seconds",
                   "lira_auc", "lira_tpr_at_0.1pct_fpr", "lira_tpr_at_1pct_fpr",
                   "audit_epsilon_lower_bound", "audit_epsilon_lower_bound_whitebox"):
        assert column in rows[0]
    # LiRA and the black-box audit attack every method; the white-box audit needs a DP
    # optimizer (the five DP-SGD rows).
    for r in rows:
        assert 0.0 <= float(r["lira_auc"]) <= 1.0 and float(r["audit_epsilon_lower_bound"]) >= 0
        has_white_box = r["method"] not in ("No-DP", "Residual perturbation", "NeuralDP")
        assert (r["audit_epsilon_lower_bound_whitebox"] != "") == has_white_box, r["method"]
    by_name = {r["method"]: r for r in rows}
    # No formal guarantee: No-DP, and the random schedule once it released a noiseless step
    # (with 5 steps all coins can come up "noise", and then the run is an ordinary DP run).
    assert by_name["No-DP"]["epsilon"] == "inf"
    for name in ("Gaussian RanN-DP-SGD", "Laplace RanN-DP-SGD"):
        if float(by_name[name]["noisy_steps_percent"]) < 100.0:
            assert by_name[name]["epsilon"] == "inf", name
    # The regular schedule is calibrated on the steps really taken (1 epoch of ceil(160/32) = 5):
    # it trains them all and ends at the target epsilon, never above it.
    for name in ("Gaussian RegN-DP-SGD", "Laplace RegN-DP-SGD"):
        eps = float(by_name[name]["epsilon"])
        assert 2.0 * 0.97 <= eps <= 2.0 * 1.0001, (name, eps)
        assert float(by_name[name]["noisy_steps_percent"]) == 100.0
        assert float(by_name[name]["steps_per_epoch"]) == 5
    # The sound variant: a formal guarantee over the noisy steps that happened, no update on
    # the dropped ones.
    drop = by_name["Gaussian RanN-DP-SGD (drop)"]
    assert math.isfinite(float(drop["epsilon"]))
    assert float(drop["epsilon"]) == pytest.approx(float(drop["epsilon_noisy_steps_only"]))
    # RanN: the paper's convention figure is finite; noisy share of steps near p = 0.5.
    for name in ("Gaussian RanN-DP-SGD", "Laplace RanN-DP-SGD"):
        assert math.isfinite(float(by_name[name]["epsilon_noisy_steps_only"]))
        assert 0.0 <= float(by_name[name]["noisy_steps_percent"]) <= 100.0
    # The other methods: no formal guarantee, measured by the same attacks; NeuralDP's claim
    # (calibrated to the target) only in its labelled column.
    for name in ("Residual perturbation", "NeuralDP"):
        assert by_name[name]["epsilon"] == "inf", name
        assert float(by_name[name]["attack_auc"]) >= 0.0 and by_name[name]["accuracy"]
    assert by_name["Residual perturbation"]["epsilon_claimed"] == ""
    assert 2.0 * 0.97 <= float(by_name["NeuralDP"]["epsilon_claimed"]) <= 2.0 * 1.0001
    record = json.loads((out / "comparison.json").read_text())
    # The per-patient row: patients sampled at the examples' rate (the same 5 steps per
    # epoch), its epsilon per patient at the target.
    patient = by_name["Gaussian RegN-DP-SGD per patient"]
    assert patient["privacy_unit"] == "patient" and by_name["No-DP"]["privacy_unit"] == "example"
    assert 2.0 * 0.97 <= float(patient["epsilon"]) <= 2.0 * 1.0001
    assert float(patient["steps_per_epoch"]) == 5
    assert len(record["table"]) == 9
    # 6 DP-SGD methods and NeuralDP x {1, 2, 4} targets + 1 No-DP + 1 residual perturbation run.
    assert len(record["runs"]) == 23
    assert sorted({r["target_epsilon"] for r in record["sweep"]}) == [1.0, 4.0]
    png = (out / "privacy_utility.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    assert (out / "lira_roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_bad_flags_fail_clearly(tmp_path, run_script):
    result = run_script("compare.py", "--methods=no_dp,gaussian_regn,bogus", "--epochs=1")
    assert result.returncode != 0 and "Unknown methods ['bogus']" in result.stderr
    result = run_script("compare.py", "--noise_probability=1.5", "--epochs=1")
    assert result.returncode != 0 and "noise_probability" in result.stderr


def test_plot_puts_infinite_epsilons_in_the_labelled_column_never_at_a_finite_value():
    rows = [
        {"method": "Gaussian RegN-DP-SGD", "target_epsilon": t, "epsilon": t,
         "epsilon_noisy_steps_only": t, "accuracy": 0.5 + t / 20, "attack_auc": 0.5}
        for t in (0.5, 2.0, 8.0)
    ] + [
        {"method": "Gaussian RanN-DP-SGD", "target_epsilon": t, "epsilon": math.inf,
         "epsilon_noisy_steps_only": t, "accuracy": 0.6 + t / 20, "attack_auc": 0.52}
        for t in (0.5, 2.0, 8.0)
    ]
    table = [{"method": "No-DP", "target_epsilon": None, "epsilon": math.inf,
              "epsilon_noisy_steps_only": math.inf, "accuracy": 0.97, "attack_auc": 0.55}]
    fig = comparison_plot.privacy_utility_figure(rows, table, "test")
    formal_axis = fig.axes[0]
    labels = [t.get_text() for t in formal_axis.get_xticklabels()]
    assert "no formal" in labels[-1]
    inf_x = formal_axis.get_xticks()[-1]
    assert inf_x > 8.0
    # Every point drawn for an infinite epsilon (RanN and No-DP in this panel) sits in the
    # infinity column, to the right of all finite epsilons.
    xs_by_y = {}
    for line in formal_axis.get_lines():
        if line.get_gid() == "reference":  # horizontal guide lines, drawn across the panel
            continue
        for x, y in zip(line.get_xdata(), line.get_ydata()):
            xs_by_y.setdefault(round(float(y), 6), []).append(float(x))
    for collection in formal_axis.collections:
        for x, y in collection.get_offsets():
            xs_by_y.setdefault(round(float(y), 6), []).append(float(x))
    for r in rows[3:] + table:
        xs = xs_by_y[round(r["accuracy"], 6)]
        assert xs and all(x > 8.0 * 1.5 for x in xs), (r, xs)
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_aggregate_over_seeds_never_understates_epsilon():
    base = {"method": "m", "target_epsilon": 1.0, "noise_multiplier": 2.0, "statement": "s",
            "accuracy": 0.5, "attack_auc": 0.5}
    rows = [dict(base, epsilon=1.0, epsilon_noisy_steps_only=1.0, accuracy=0.6),
            dict(base, epsilon=math.inf, epsilon_noisy_steps_only=0.9, accuracy=0.8)]
    out = comparison.aggregate(rows)
    assert math.isinf(out["epsilon"]) and out["epsilon_noisy_steps_only"] == 1.0
    assert out["accuracy"] == pytest.approx(0.7)
    assert out["accuracy_std"] == pytest.approx(math.sqrt(0.02))  # sample std of (0.6, 0.8)
    assert out["seeds"] == 2


def test_compute_epsilon_script_per_patient(run_script):
    result = run_script("compute_epsilon.py", "--num_examples=480", "--batch_size=160",
                        "--noise_multiplier=2", "--steps=60", "--privacy_unit=patient", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads(result.stdout)
    want = tfdp.compute_epsilon(480, 160, 2.0, steps=60, privacy_unit="patient")
    assert record["privacy_unit"] == "patient" and record["epsilon"] == pytest.approx(want.epsilon)
    assert "each patient joining each step" in " ".join(record["statement"].split())
    bad = run_script("compute_epsilon.py", "--num_examples=480", "--batch_size=160",
                     "--noise_multiplier=2", "--steps=60", "--privacy_unit=two words")
    assert bad.returncode != 0 and "privacy_unit" in bad.stderr
