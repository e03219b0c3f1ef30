"""The privacy record that travels with an exported model: `VERSION/assets.extra/privacy.json`.

TF Serving ignores `assets.extra/`, so the record rides along with the SavedModel
without changing what is served. It holds `PrivacyResult.to_dict()`'s fields at
the top level (epsilon, epsilon_noisy_steps_only, delta, accountant, statement,
mechanism, schedule, noise multiplier, sampling, steps, noisy steps, ...), the
training settings under "training" (clip norms, batch size, epochs, ...), the
library versions under "libraries", `has_formal_guarantee`, and what was exported
under "export".

The file is strict JSON (readable by any JSON parser, `jq`, or a browser).
Infinite or NaN floats, which JSON cannot hold, are written as the strings "inf",
"-inf" and "nan", and "format"."non_finite_floats" lists where they are, so
`read_privacy` turns exactly those back into floats (`math.inf` for epsilon = inf).
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from tfdp._json import NON_FINITE_TEXT, non_finite_text
from tfdp.export.versions import list_versions
from tfdp.names import NO_NOISE

RECORD_DIR = "assets.extra"
RECORD_FILE = "privacy.json"
RECORD_PATH = os.path.join(RECORD_DIR, RECORD_FILE)
FORMAT_NAME = "tfdp-privacy-record"
FORMAT_VERSION = 1

# PrivacyResult.to_dict()'s keys that every record must hold.
REQUIRED_KEYS = ("epsilon", "epsilon_noisy_steps_only", "delta", "accountant", "statement")
# Top-level numbers a JSON round trip (e.g. train.py's metrics file) may have turned into "inf".
_FLOAT_KEYS = (
    "epsilon", "epsilon_noisy_steps_only", "epsilon_assuming_poisson", "delta",
    "noise_multiplier", "accounted_noise_multiplier", "noise_probability", "batch_size",
    "sampling_probability",
)
# Keys this module writes; a given record's values for them are replaced.
RESERVED_KEYS = ("has_formal_guarantee", "libraries", "format", "export")
LIBRARIES = ("tensorflow", "keras", "tensorflow-privacy", "dp-accounting", "tfdp")

_NO_GUARANTEE = re.compile(
    r"\bno\s+(formal\s+)?((differential[-\s]privacy|privacy|dp)\s+)?guarantee"
    r"|formal\s+guarantee:\s*none",
    re.IGNORECASE,
)
NO_GUARANTEE_SENTENCE = (
    "Formal guarantee: none. Epsilon is infinite: this model was trained without a formal "
    "differential-privacy guarantee."
)


def _jsonable(value: Any, path: str) -> Any:
    """Plain Python values (dict/list/str/int/float/bool/None) from NumPy-ish ones."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist(), path)
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value)
    if value is None or isinstance(value, str):
        return value
    raise ValueError(
        f"The privacy record's `{path}` is a {type(value).__name__}, which JSON cannot hold; "
        "use numbers, strings, booleans, None, lists and dicts."
    )


def _as_float(record: Dict[str, Any], key: str) -> None:
    """Turns a text record[key] ("inf", "1e-5") into a float in place; numbers and None stay."""
    value = record.get(key)
    if value is None or _is_number(value):
        return
    if isinstance(value, bool):
        raise ValueError(f"The privacy record's `{key}` must be a number, got {value!r}.")
    try:
        record[key] = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"The privacy record's `{key}` must be a number (or 'inf'), got "
                         f"{value!r}.") from None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_epsilon(name: str, value: Any, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not _is_number(value) or math.isnan(value) or value < 0:
        raise ValueError(f"The privacy record's `{name}` must be a number >= 0 or inf "
                         f"(no formal guarantee), got {value!r}.")


def _mechanism(record: Mapping[str, Any]) -> Optional[str]:
    training = record.get("training")
    if record.get("mechanism") is not None:
        return record.get("mechanism")
    if isinstance(training, Mapping):
        return training.get("mechanism")
    return None


def library_versions() -> Dict[str, Optional[str]]:
    """Installed versions of the libraries that trained and accounted the model (None if absent)."""
    versions: Dict[str, Optional[str]] = {"python": platform.python_version()}
    for package in LIBRARIES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def make_privacy_record(
    privacy: Any, *, training: Optional[Mapping[str, Any]] = None
) -> Dict[str, Any]:
    """A checked privacy record (floats may be `math.inf`) from a PrivacyResult or a dict.

    Args:
      privacy: a `tfdp.PrivacyResult`, or a dict with at least `REQUIRED_KEYS`
        (e.g. `PrivacyResult.to_dict()`, scripts/train.py's "privacy" record, or a
        record read back with `read_privacy`). Numbers written as "inf" are accepted.
      training: training settings (clip norms, batch size, epochs, ...) merged into
        the record's "training" dict (over any the dict already has).

    Returns a new dict: the given fields, "training", "has_formal_guarantee" and
    "libraries" (this machine's versions). When epsilon is inf and the statement does
    not already say there is no formal guarantee, a sentence saying so is appended.

    Raises:
      ValueError: `privacy` is None or lacks a required key, epsilon is negative or
        NaN, delta is outside [0, 1), the statement is empty, a value is not
        JSON-friendly, or a finite epsilon is claimed for mechanism "none".
    """
    if privacy is None:
        raise ValueError(
            "A privacy record is required: pass privacy=<tfdp.PrivacyResult> (from "
            "tfdp.compute_epsilon) or its to_dict(), e.g. scripts/train.py's 'privacy' record. "
            "A model trained without DP takes a record with epsilon = inf "
            "(tfdp.compute_epsilon(..., mechanism='none'))."
        )
    if hasattr(privacy, "to_dict") and callable(privacy.to_dict):
        privacy = privacy.to_dict()
    if not isinstance(privacy, Mapping):
        raise ValueError(f"`privacy` must be a tfdp.PrivacyResult or a dict, got "
                         f"{type(privacy).__name__}.")
    record = _jsonable(dict(privacy), "privacy")
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        hint = (" It looks like a whole metrics record: pass its 'privacy' entry."
                if isinstance(record.get("privacy"), Mapping) else "")
        raise ValueError(
            f"The privacy record lacks {missing}; it needs {list(REQUIRED_KEYS)} "
            f"(tfdp.PrivacyResult.to_dict() has them).{hint}"
        )
    for key in _FLOAT_KEYS:
        _as_float(record, key)
    _check_epsilon("epsilon", record["epsilon"])
    _check_epsilon("epsilon_noisy_steps_only", record["epsilon_noisy_steps_only"], optional=True)
    delta = record["delta"]
    if not _is_number(delta) or not 0.0 <= delta < 1.0:
        raise ValueError(f"The privacy record's `delta` must be in [0, 1), got {delta!r}.")
    if record["accountant"] is not None and not isinstance(record["accountant"], str):
        raise ValueError(f"The privacy record's `accountant` must be a string such as 'rdp' or "
                         f"'pld' (or None), got {record['accountant']!r}.")
    statement = record["statement"]
    if not isinstance(statement, str) or not statement.strip():
        raise ValueError("The privacy record's `statement` must be a non-empty text that says "
                         "what the guarantee covers (tfdp.PrivacyResult.statement).")

    if training is not None:
        if not isinstance(training, Mapping):
            raise ValueError(f"`training` must be a dict of settings, got "
                             f"{type(training).__name__}.")
        merged = dict(record.get("training") or {})
        merged.update(_jsonable(dict(training), "training"))
        record["training"] = merged
    elif "training" in record and not isinstance(record["training"], (Mapping, type(None))):
        raise ValueError("The privacy record's `training` must be a dict of settings.")

    finite = math.isfinite(record["epsilon"])
    if finite and _mechanism(record) == NO_NOISE:
        raise ValueError(
            f"The privacy record claims epsilon = {record['epsilon']:g} for mechanism 'none' "
            "(training without noise has no formal guarantee): epsilon must be inf."
        )
    if not finite and not _NO_GUARANTEE.search(statement):
        record["statement"] = statement.rstrip() + "\n\n" + NO_GUARANTEE_SENTENCE + "\n"
    record["has_formal_guarantee"] = finite
    record["libraries"] = library_versions()
    return record


# ----- strict JSON with infinities -----

def _encode(value: Any, path: List[Union[str, int]], non_finite: List[List[Union[str, int]]]):
    if isinstance(value, dict):
        return {k: _encode(v, path + [k], non_finite) for k, v in value.items()}
    if isinstance(value, list):
        return [_encode(v, path + [i], non_finite) for i, v in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):
        non_finite.append(list(path))
        return non_finite_text(value)
    return value


def to_json(record: Mapping[str, Any]) -> str:
    """Strict JSON text of `record`; non-finite floats as "inf"/"-inf"/"nan", listed in "format"."""
    body = {k: v for k, v in _jsonable(dict(record), "record").items() if k != "format"}
    non_finite: List[List[Union[str, int]]] = []
    encoded = _encode(body, [], non_finite)
    encoded["format"] = {
        "name": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "non_finite_floats": non_finite,
        "note": "JSON has no infinity: the fields listed in non_finite_floats hold the strings "
                "'inf', '-inf' or 'nan'. epsilon = 'inf' means no formal DP guarantee.",
    }
    return json.dumps(encoded, indent=2, allow_nan=False, ensure_ascii=False) + "\n"


def _set_float(record: Any, path: Sequence[Union[str, int]], source: str) -> None:
    target = record
    for key in path[:-1]:
        target = target[key]
    text = target[path[-1]]
    if text not in NON_FINITE_TEXT:
        raise ValueError(f"{source}: field {list(path)} is listed as non-finite but holds "
                         f"{text!r}.")
    target[path[-1]] = NON_FINITE_TEXT[text]


def from_json(text: str, source: str = "privacy record") -> Dict[str, Any]:
    """Parses `to_json`'s text back, with "inf" fields as `math.inf` again."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{source} is not valid JSON: {error}.") from None
    if not isinstance(record, dict):
        raise ValueError(f"{source} must hold a JSON object, got {type(record).__name__}.")
    fmt = record.get("format")
    if isinstance(fmt, dict) and isinstance(fmt.get("non_finite_floats"), list):
        for path in fmt["non_finite_floats"]:
            try:
                _set_float(record, path, source)
            except (KeyError, IndexError, TypeError):
                raise ValueError(f"{source}: non-finite field {path} is missing.") from None
    else:  # a hand-written record: accept "inf" in the top-level numbers
        for key in _FLOAT_KEYS:
            if isinstance(record.get(key), str) and record[key].lower() in NON_FINITE_TEXT:
                record[key] = NON_FINITE_TEXT[record[key].lower()]
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise ValueError(f"{source} is not a tfdp privacy record: it lacks {missing}.")
    return record


# ----- files -----

def write_privacy_record(version_dir: str, record: Mapping[str, Any]) -> str:
    """Writes `record` to `version_dir/assets.extra/privacy.json`; returns the file's path."""
    folder = os.path.join(version_dir, RECORD_DIR)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, RECORD_FILE)
    with open(path, "w", encoding="utf-8") as f:
        f.write(to_json(record))
    return path


def _is_version_dir(path: str) -> bool:
    return any(os.path.exists(os.path.join(path, f)) for f in ("saved_model.pb",
                                                                "saved_model.pbtxt"))


def privacy_record_path(path: str) -> str:
    """The privacy.json that `read_privacy(path)` reads (see there for what `path` may be)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"{path!r} does not exist; pass an exported version folder "
                         "(BASE/NAME/VERSION), its model folder (BASE/NAME) or a privacy.json.")
    if os.path.isfile(path):
        return path
    if not _is_version_dir(path) and not os.path.exists(os.path.join(path, RECORD_PATH)):
        versions = list_versions(path)
        if not versions:
            raise ValueError(
                f"{path!r} is neither a SavedModel version folder (with saved_model.pb) nor a "
                "model folder holding integer version folders (BASE/NAME/1/, ...)."
            )
        path = os.path.join(path, str(versions[-1]))
    record = os.path.join(path, RECORD_PATH)
    if not os.path.isfile(record):
        raise ValueError(
            f"{path!r} has no privacy record ({RECORD_PATH}). Models exported with "
            "tfdp.export.export_saved_model carry one; this SavedModel was exported some other "
            "way, so what it was trained under is unknown. Re-export it with "
            "export_saved_model(..., privacy=...)."
        )
    return record


def read_privacy(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """Reads the privacy record of an exported model.

    Args:
      path: the version folder `BASE/NAME/VERSION` (what `export_saved_model`
        returns), or the model folder `BASE/NAME` (then the highest version, the one
        TF Serving serves by default, is read), or the `privacy.json` file itself.

    Returns the record as a dict: `PrivacyResult.to_dict()`'s keys ("epsilon",
    "epsilon_noisy_steps_only", "delta", "accountant", "statement", ...) with
    `math.inf` where epsilon is infinite, the training settings under "training",
    "has_formal_guarantee", "libraries" and "export" (name, version, signature).

    Raises:
      ValueError: the path does not exist, has no privacy record, holds a
        non-integer folder among its versions, or the record is not valid.
    """
    record_path = privacy_record_path(os.fspath(path))
    with open(record_path, encoding="utf-8") as f:
        return from_json(f.read(), source=record_path)
