"""Every script answers `--helpful` (the flag listing of docs/api/index.md) with its own flags."""

import pytest


@pytest.mark.parametrize("script, flag", [
    ("compute_epsilon.py", "--noise_multiplier"),
    ("train.py", "--on_skip"),
    ("compare.py", "--target_epsilon"),
    ("evaluate.py", "--model_path"),
    ("benchmark.py", "--slow_steps"),
])
def test_helpful_lists_the_scripts_flags(script, flag, run_script):
    done = run_script(script, "--helpful")  # in this process: conftest's run_script
    assert done.returncode in (0, 1), done.stderr[-2000:]  # absl exits 1 after help
    assert flag in done.stdout + done.stderr
