"""Command-line conventions shared by the scripts."""

from __future__ import annotations

import sys
from typing import List


def argv_with_helpful() -> List[str]:
    """`sys.argv` with `--helpful` (the documented way to list flags) read as absl's `--helpfull`."""
    return ["--helpfull" if arg == "--helpful" else arg for arg in sys.argv]
