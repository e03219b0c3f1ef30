"""Every script answers `--helpful` (the flag listing of docs/api/index.md) with its own flags."""

import os
import subprocess
import sys

import pytest

# Runs scripts or whole trainings in subprocesses: part of CI (TFDP_RUN_SLOW=1), not of the
# default `make test`.
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("script, flag", [
    ("compute_epsilon.py", "--noise_multiplier"),
    ("train.py", "--on_skip"),
    ("compare.py", "--target_epsilon"),
    ("evaluate.py", "--model_path"),
    ("benchmark.py", "--slow_steps"),
])
def test_helpful_lists_the_scripts_flags(script, flag):
    done = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", script), "--helpful"],
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert done.returncode in (0, 1), done.stderr[-2000:]  # absl exits 1 after help
    assert flag in done.stdout + done.stderr
