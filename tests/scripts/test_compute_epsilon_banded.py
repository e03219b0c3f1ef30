"""scripts/compute_epsilon.py with --mechanism=banded_mf --bands=B: the library's figures."""

import json

import pytest

import tfdp


def test_banded_mf_epsilon_is_the_librarys_and_fewer_participations_than_dp_sgd(run_script):
    args = ("--num_examples=4000", "--batch_size=100", "--noise_multiplier=1.2", "--steps=400")
    result = run_script("compute_epsilon.py", *args, "--mechanism=banded_mf", "--bands=4",
                        "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads(result.stdout)
    want = tfdp.compute_epsilon(4000, 100, 1.2, steps=400, mechanism="banded_mf", bands=4)
    assert record["epsilon"] == pytest.approx(want.epsilon, rel=1e-9)
    # Not DP-SGD's figure: 100 participations at q = 0.1 (B * b / n), not 400 at q = 0.025.
    plain = tfdp.compute_epsilon(4000, 100, 1.2, steps=400, mechanism="gaussian",
                                 accountant="pld")
    assert abs(record["epsilon"] - plain.epsilon) > 0.05
    assert "at most 100 of the 400 steps" in " ".join(record["statement"].split())


def test_banded_mf_calibration_reaches_the_target(run_script):
    result = run_script("compute_epsilon.py", "--num_examples=4000", "--batch_size=100",
                        "--steps=400", "--mechanism=banded_mf", "--bands=4",
                        "--target_epsilon=2", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads(result.stdout)
    assert 1.95 < record["epsilon"] <= 2.0 + 1e-9
    check = tfdp.compute_epsilon(4000, 100, record["noise_multiplier"], steps=400,
                                 mechanism="banded_mf", bands=4)
    assert check.epsilon == pytest.approx(record["epsilon"], rel=1e-9)


@pytest.mark.parametrize("args, message", [
    (("--mechanism=banded_mf",), "needs `bands`"),
    (("--mechanism=banded_mf", "--bands=8", "--num_examples=700"), "batch_size \\* bands"),
    (("--bands=4",), "for mechanism='banded_mf'"),
])
def test_banded_mf_flags_are_refused_with_the_reason(args, message, run_script):
    import re

    flags = {"--num_examples": "4000", "--batch_size": "100", "--noise_multiplier": "1.2",
             "--steps": "400"}
    for arg in args:
        name, _, value = arg.partition("=")
        flags[name] = value
    result = run_script("compute_epsilon.py", *(f"{k}={v}" for k, v in flags.items()))
    assert result.returncode != 0
    assert re.search(message, " ".join(result.stderr.split())), result.stderr[-1500:]
