"""Shared test set-up: quiet TensorFlow, fixed seeds, small data."""

import gc
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import keras
import tensorflow as tf  # noqa: E402


def pytest_collection_finish(session):
    """Once every test module is imported: the objects alive now (TensorFlow's, Keras's, ...:
    about 400,000, all kept to the end) are set aside from the garbage collector, whose every
    full pass would otherwise walk them all again (about a second each)."""
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from a fresh Keras state and the same global seeds.

    Keras's state only: no forced garbage collection (clear_session's default), which took
    about a second before every test; Python's collector runs as usual.
    """
    keras.backend.clear_session(free_memory=False)
    tf.random.set_seed(1234)
    np.random.seed(1234)
    yield


# Tests marked `slow` (scripts, whole trainings, fresh processes, the README's snippets) run
# when TFDP_RUN_SLOW=1, as CI sets it; the default `make test` skips them, saying why.
RUN_SLOW = os.environ.get("TFDP_RUN_SLOW") == "1"


def pytest_collection_modifyitems(config, items):
    """Skips the `slow` tests unless TFDP_RUN_SLOW=1."""
    if RUN_SLOW:
        return
    skip = pytest.mark.skip(reason="slow: TFDP_RUN_SLOW=1 make test runs it (CI does)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


# ----- the command-line scripts, run in this process -----

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_script(script, *args, cwd=REPO):
    """`python scripts/<script> <args>` run in this process: a CompletedProcess-like result.

    Calls the script's entry point (`tfdp.scripts.<name>.cli`, what the file and the console
    script run) with `sys.argv` set, and captures what it prints. A new Python would spend
    most of its time importing TensorFlow; the tests that need a fresh process (start-up,
    oneDNN, a kill mid-run) still start one. As in a process: `sys.exit("message")` prints
    the message on stderr and returns 1; an uncaught exception prints its traceback on
    stderr and returns 1. The flags the script defines are removed afterwards (the next
    run defines them afresh), and the absl logging verbosity is restored.
    """
    import contextlib
    import importlib
    import io
    import subprocess
    import sys
    import traceback

    from absl import app, flags
    from absl import logging as absl_logging

    name = os.path.splitext(os.path.basename(script))[0]
    module = importlib.import_module(f"tfdp.scripts.{name}")
    app.define_help_flags()  # absl's own (--helpfull, ...), defined by the first app.run: kept
    defined = set(flags.FLAGS)
    verbosity = absl_logging.get_verbosity()
    saved_argv, saved_cwd = sys.argv, os.getcwd()
    out, err = io.StringIO(), io.StringIO()
    code = 0
    try:
        os.chdir(cwd)
        sys.argv = [os.path.join(REPO, "scripts", f"{name}.py"), *map(str, args)]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                module.cli()
            except SystemExit as exit_:
                if exit_.code is None:
                    code = 0
                elif isinstance(exit_.code, int):
                    code = exit_.code
                else:
                    print(exit_.code, file=sys.stderr)
                    code = 1
            except Exception:  # noqa: BLE001  (as the interpreter would: traceback, status 1)
                traceback.print_exc()
                code = 1
    finally:
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        absl_logging.set_verbosity(verbosity)
        for flag in set(flags.FLAGS) - defined:
            delattr(flags.FLAGS, flag)
    return subprocess.CompletedProcess([script, *args], code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session")
def run_script():
    """`run_script("train.py", "--epochs=1", ...)`: a script run in this process (see above)."""
    return _run_script


@pytest.fixture(scope="session")
def results_page():
    """tools/results_page.py (it renders docs/results.md; a tool of the checkout, not installed)."""
    import importlib.util  # pylint: disable=import-outside-toplevel

    spec = importlib.util.spec_from_file_location(
        "results_page", os.path.join(REPO, "tools", "results_page.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
