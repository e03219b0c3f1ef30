"""The recipe sweep: candidates scored on a validation copy of the training split only."""

import dataclasses
import json
import os

import numpy as np
import pytest

import tfdp.data
from tfdp.run import RunConfig
from tfdp.run.sweep import SweepConfig, grid_text, parse_grid, sweep


def test_validation_split_partitions_the_training_split_and_drops_the_test_split():
    data = tfdp.data.load_dataset("digits")
    held_out = data.validation_split(0.25, seed=3)
    assert held_out.num_train + held_out.num_test == data.num_train
    original = {row.tobytes() for row in data.x_train}
    seen = [row.tobytes() for row in np.concatenate([held_out.x_train, held_out.x_test])]
    assert set(seen) <= original and len(set(seen)) == len(set(original))
    assert not {row.tobytes() for row in data.x_test} & set(seen) - original
    # Stratified: every class in the held-out part, in proportion.
    counts = np.bincount(held_out.y_test, minlength=10) / held_out.num_test
    assert np.allclose(counts, np.bincount(data.y_train, minlength=10) / data.num_train,
                       atol=0.02)


def test_sweep_ranks_the_candidates_and_writes_the_record(tmp_path):
    base = RunConfig(mechanism="gaussian", target_epsilon=4.0, epochs=2, batch_size=64,
                     model="linear", max_train_examples=300,
                     insecure_reproducible_seed=0)  # the same batches and noise per seed
    config = SweepConfig(grid=(("learning_rate", (0.001, 2.0)),), seeds=2, base=base,
                         output_dir=str(tmp_path))
    lines = []
    result = sweep(config, log=lines.append)
    assert [r["learning_rate"] for r in result.rows] == [2.0, 0.001]  # a tiny rate learns nothing
    assert result.rows[0]["val_accuracy"] > result.rows[1]["val_accuracy"] + 0.1
    assert all(len(r["val_accuracies"]) == 2 for r in result.rows)
    assert result.best == {"learning_rate": 2.0}
    record = json.load(open(os.path.join(tmp_path, "recipe_sweep.json")))
    assert record["best"] == {"learning_rate": 2.0} and record["base"]["target_epsilon"] == 4.0
    assert os.path.exists(os.path.join(tmp_path, "recipe_sweep.csv"))
    assert "test split is not used" in lines[0]


@pytest.mark.parametrize("grid, message", [
    ((("target_epsilon", (1.0, 2.0)),), "cannot vary"),
    ((("learning_rate", ()),), "no values"),
    ((), "empty"),
    ((("ema_momentum", (1.5,)),), "ema_momentum"),
])
def test_sweep_refuses_bad_grids(grid, message):
    with pytest.raises(ValueError, match=message):
        SweepConfig(grid=grid).validated()


def test_the_grid_flag_parses_numbers_names_and_none():
    text = "model=linear,digits_cnn;learning_rate=0.5,2;ema_momentum=none,0.9"
    grid = parse_grid(text)
    assert grid == (("model", ("linear", "digits_cnn")), ("learning_rate", (0.5, 2)),
                    ("ema_momentum", (None, 0.9)))
    assert parse_grid(grid_text(grid)) == grid
    with pytest.raises(ValueError, match="name=v1,v2"):
        parse_grid("learning_rate")


def test_sweep_arms_chooses_on_validation_then_scores_each_choice_on_the_test_split(tmp_path):
    from tfdp.run.sweep import Arm, ArmsConfig, sweep_arms

    base = RunConfig(mechanism="gaussian", target_epsilon=4.0, epochs=2, batch_size=64,
                     model="linear", max_train_examples=300, insecure_reproducible_seed=0)
    arms = (Arm("slow", (("learning_rate", (0.001, 0.002)),)),
            Arm("fast", (("learning_rate", (2.0,)), ("batch_size", (32, 64)))))
    lines = []
    record = sweep_arms(ArmsConfig(arms=arms, seeds=2, base=base, output_dir=str(tmp_path),
                                   record_name="study", command="python x.py"), log=lines.append)
    assert [r["arm"] for r in record["validation"]] == ["slow"] * 2 + ["fast"] * 2
    assert record["chosen"]["fast"]["learning_rate"] == 2.0
    for name in ("slow", "fast"):
        rows = [r for r in record["validation"] if r["arm"] == name]
        best = max(rows, key=lambda r: r["val_accuracy"])
        assert record["chosen"][name] == {k: best[k] for k in record["chosen"][name]}
    assert record["best_on_validation"] == "fast"
    test = {row["arm"]: row for row in record["test"]}
    assert test["fast"]["test_accuracy"] > test["slow"]["test_accuracy"] + 0.1
    assert test["slow"]["trainable_parameters"] == 64 * 10 + 10  # linear on 8x8 digits
    assert len(test["fast"]["test_accuracies"]) == 2 and test["fast"]["epsilon"] <= 4.0 + 1e-6
    assert json.load(open(tmp_path / "study.json"))["command"] == "python x.py"
    table = open(tmp_path / "study.csv").read().splitlines()
    assert table[0].startswith("arm,stage,learning_rate,batch_size,trainable_parameters")
    assert len(table) == 1 + 2 * 2  # each arm: its validation and test rows


def test_an_arm_changes_the_method_on_the_shared_base_but_never_the_budget():
    from tfdp.run.sweep import Arm, ArmsConfig

    base = RunConfig(mechanism="gaussian", target_epsilon=2.0, epochs=2, batch_size=64)
    arms = (Arm("dp_sgd", (("learning_rate", (1.0,)),)),
            Arm("banded", (("bands", (2, 4)),), (("mechanism", "banded_mf"),)))
    sweeps = dict(ArmsConfig(arms=arms, base=base).sweeps())
    assert [(c.mechanism, c.bands, c.target_epsilon) for c in sweeps["banded"].candidates()] \
        == [("banded_mf", 2, 2.0), ("banded_mf", 4, 2.0)]
    assert [(c.mechanism, c.bands) for c in sweeps["dp_sgd"].candidates()] == [("gaussian", None)]
    # bands is tunable, but only for the mechanism that has bands.
    with pytest.raises(ValueError, match="bands"):
        ArmsConfig(arms=(Arm("x", (("bands", (2,)),)),), base=base).sweeps()
    with pytest.raises(ValueError, match="share the base's budget"):
        ArmsConfig(arms=(Arm("x", (("learning_rate", (1.0,)),),
                             (("target_epsilon", 8.0),)),), base=base).sweeps()
