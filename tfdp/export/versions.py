"""TF Serving's folder layout `BASE/NAME/VERSION/`: model names, version folders, the next one.

TF Serving watches `BASE/NAME/` and serves the integer-named sub-folders as model
versions (the highest by default). Other folders there are ignored by the server
but almost always a mistake (a half-copied export, a renamed version), so this
module refuses to pick a version next to them instead of guessing.
"""

from __future__ import annotations

import operator
import os
import re
from typing import List, Optional

# TF Serving model names end up in URLs (/v1/models/NAME:predict): keep them URL-safe.
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_model_name(name: str) -> str:
    """Returns `name`, or raises ValueError if it is not a URL-safe folder name."""
    if not isinstance(name, str) or not _NAME_PATTERN.match(name) or name in (".", ".."):
        raise ValueError(
            f"Model `name` must be a folder name of letters, digits, '_', '-' and '.' starting "
            f"with a letter or digit (it becomes part of the TF Serving URL "
            f"/v1/models/NAME:predict), got {name!r}."
        )
    return name


def check_version(version: object) -> int:
    """Returns `version` as an int, or raises ValueError unless it is an integer >= 1."""
    message = (f"`version` must be an integer >= 1 (or None for the next free one), "
               f"got {version!r}.")
    if isinstance(version, bool):
        raise ValueError(message)
    try:
        number = operator.index(version)  # ints and NumPy integers; not floats or strings
    except TypeError:
        raise ValueError(message) from None
    if number < 1:
        raise ValueError(message)
    return number


def list_versions(model_dir: str) -> List[int]:
    """The integer versions under `model_dir` (sorted), [] when it does not exist.

    Raises ValueError when `model_dir` holds a folder whose name is not an integer
    (e.g. `tmp/`): TF Serving would silently skip it, and a version number picked
    next to it could clash with whatever it was meant to become.
    """
    if not os.path.exists(model_dir):
        return []
    if not os.path.isdir(model_dir):
        raise ValueError(f"{model_dir!r} is a file; the model folder must be a directory of "
                         "integer version folders (BASE/NAME/VERSION/).")
    versions, strays = [], []
    for entry in sorted(os.listdir(model_dir)):
        if not os.path.isdir(os.path.join(model_dir, entry)):
            continue  # files (notes, .DS_Store) do not confuse TF Serving
        if entry.isdigit() and entry.isascii():
            versions.append(int(entry))
        else:
            strays.append(entry)
    if strays:
        raise ValueError(
            f"{model_dir!r} holds folder(s) {strays} whose names are not integer versions. TF "
            "Serving serves only integer-named version folders (BASE/NAME/1/, BASE/NAME/2/, ...); "
            "move or rename those folders, or export under another name."
        )
    if len(set(versions)) != len(versions):
        raise ValueError(f"{model_dir!r} holds version folders that name the same number "
                         "(e.g. '1' and '01'); keep one of them.")
    return sorted(versions)


def latest_version(model_dir: str) -> Optional[int]:
    """The highest integer version under `model_dir` (what TF Serving serves), or None."""
    versions = list_versions(model_dir)
    return versions[-1] if versions else None


def next_version(model_dir: str) -> int:
    """One more than the highest existing version, or 1."""
    latest = latest_version(model_dir)
    return 1 if latest is None else latest + 1
