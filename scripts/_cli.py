"""Command-line conventions shared by the scripts."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator, List


def argv_with_helpful() -> List[str]:
    """`sys.argv` with `--helpful` (the documented way to list flags) read as absl's `--helpfull`."""
    return ["--helpfull" if arg == "--helpful" else arg for arg in sys.argv]


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Sends what native code writes to file descriptor 2 to /dev/null while active."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def quiet_tensorflow_startup() -> None:
    """Imports TensorFlow without its native start-up log lines, before a script prints anything.

    TensorFlow's C++ logging writes straight to stderr before `TF_CPP_MIN_LOG_LEVEL` is read
    (the absl notice, the oneDNN notice, CUDA driver probing and `cuInit` failures on a CPU
    machine). Those lines are silenced for the import and the device discovery only; every
    later warning or error, and any import error's traceback, shows as usual.
    """
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _native_stderr_silenced():
        import tensorflow as tf  # pylint: disable=import-outside-toplevel

        tf.config.list_physical_devices()
