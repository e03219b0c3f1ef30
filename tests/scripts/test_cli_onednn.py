"""scripts/_cli.py turns oneDNN on for the command-line scripts unless the user chose already.

TensorFlow leaves oneDNN off on AMD CPUs (TF_ENABLE_ONEDNN_OPTS unset), where DP training then
runs 2-4x slower; the scripts set it to 1 before TensorFlow is imported and say so on stderr.
`import tfdp` changes no setting. The unit tests call the function with a patched environment
(TensorFlow, imported by conftest, is hidden from sys.modules for the call); the subprocess
tests at the end run the real start-up.
"""

import os
import subprocess
import sys

import pytest

from tfdp.scripts import _cli

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VARIABLE = "TF_ENABLE_ONEDNN_OPTS"


@pytest.fixture
def tensorflow_not_imported(monkeypatch):
    """As at a script's start: TensorFlow not in sys.modules (restored after the test)."""
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)


def test_unset_variable_is_set_to_1_with_a_message(monkeypatch, tensorflow_not_imported):
    monkeypatch.delenv(VARIABLE, raising=False)
    message = _cli.enable_onednn_unless_set()
    assert os.environ[VARIABLE] == "1"
    assert message.startswith("tfdp: oneDNN turned on")
    assert "TF_ENABLE_ONEDNN_OPTS=1" in message and "TF_ENABLE_ONEDNN_OPTS=0" in message
    assert "\n" not in message
    # Once set, a second call (or a child process inheriting it) says nothing.
    assert _cli.enable_onednn_unless_set() is None
    assert os.environ[VARIABLE] == "1"


@pytest.mark.parametrize("value", ["0", "1", ""])
def test_users_setting_is_left_alone(monkeypatch, tensorflow_not_imported, value):
    monkeypatch.setenv(VARIABLE, value)
    assert _cli.enable_onednn_unless_set() is None
    assert os.environ[VARIABLE] == value


def test_too_late_once_tensorflow_is_imported(monkeypatch):
    import tensorflow  # noqa: F401  (already imported by conftest; made explicit here)

    monkeypatch.delenv(VARIABLE, raising=False)
    assert _cli.enable_onednn_unless_set() is None
    assert VARIABLE not in os.environ


def test_startup_prints_the_message_once_before_importing(monkeypatch, capsys,
                                                          tensorflow_not_imported):
    monkeypatch.delenv(VARIABLE, raising=False)
    imports = []
    seen_at_import = []

    def fake_import():
        imports.append(True)
        seen_at_import.append(os.environ.get(VARIABLE))

    monkeypatch.setattr(_cli, "_import_tensorflow", fake_import)
    _cli.quiet_tensorflow_startup()
    _cli.quiet_tensorflow_startup()  # a second call (e.g. a library helper) stays silent
    err = capsys.readouterr().err
    assert err.count("tfdp: oneDNN turned on") == 1
    assert seen_at_import[0] == "1"  # set before TensorFlow is imported
    assert len(imports) == 2


def test_startup_is_silent_when_the_user_chose(monkeypatch, capsys, tensorflow_not_imported):
    monkeypatch.setenv(VARIABLE, "0")
    monkeypatch.setattr(_cli, "_import_tensorflow", lambda: None)
    _cli.quiet_tensorflow_startup()
    assert "oneDNN" not in capsys.readouterr().err
    assert os.environ[VARIABLE] == "0"


def _python(code, **env_changes):
    env = {k: v for k, v in os.environ.items() if k != VARIABLE}
    env.update(env_changes)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return subprocess.run([sys.executable, "-c", code], cwd=os.path.join(REPO, "scripts"),
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_real_startup_turns_onednn_on_and_tensorflow_sees_it():
    done = _python("import os, _cli; _cli.quiet_tensorflow_startup(); "
                   "print(os.environ['TF_ENABLE_ONEDNN_OPTS'])")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["1"]
    assert done.stderr.count("tfdp: oneDNN turned on") == 1


@pytest.mark.slow
def test_import_tfdp_changes_no_setting():
    done = _python("import os, tfdp; print(os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset'))")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["unset"]
    assert "oneDNN turned on" not in done.stderr
