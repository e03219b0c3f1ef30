"""Command-line conventions shared by the scripts."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator, List, Optional

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
ONEDNN_MESSAGE = (
    "tfdp: oneDNN turned on (TF_ENABLE_ONEDNN_OPTS=1; set TF_ENABLE_ONEDNN_OPTS=0 to keep "
    "TensorFlow's default)"
)


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


def enable_onednn_unless_set() -> Optional[str]:
    """Turns TensorFlow's oneDNN CPU kernels on for this process unless the user chose already.

    TensorFlow enables oneDNN by itself only on some Intel CPUs; elsewhere (AMD) it stays off,
    and DP training then runs about 2-4x slower. When `TF_ENABLE_ONEDNN_OPTS` is unset this sets
    it to "1" and returns the one line saying so, for the caller to print once; when the user
    set it (to anything), or TensorFlow is already imported (too late to change it), it
    changes nothing and returns None. Child processes inherit the setting. `import tfdp` never
    calls this: only the command-line scripts do, before importing TensorFlow.
    """
    if ONEDNN_VARIABLE in os.environ or "tensorflow" in sys.modules:
        return None
    os.environ[ONEDNN_VARIABLE] = "1"
    return ONEDNN_MESSAGE


def _import_tensorflow() -> None:
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    tf.config.list_physical_devices()


def quiet_tensorflow_startup() -> None:
    """Imports TensorFlow without its native start-up log lines, before a script prints anything.

    TensorFlow's C++ logging writes straight to stderr before `TF_CPP_MIN_LOG_LEVEL` is read
    (the absl notice, the oneDNN notice, CUDA driver probing and `cuInit` failures on a CPU
    machine). Those lines are silenced for the import and the device discovery only; every
    later warning or error, and any import error's traceback, shows as usual.

    First, `enable_onednn_unless_set()`: oneDNN is turned on (one line on stderr says so)
    unless `TF_ENABLE_ONEDNN_OPTS` is set. Once TensorFlow is imported this does nothing.
    """
    if "tensorflow" in sys.modules:
        return
    message = enable_onednn_unless_set()
    if message:
        print(message, file=sys.stderr, flush=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _native_stderr_silenced():
        _import_tensorflow()
