"""Export a trained model as a TF Serving SavedModel with its privacy record.

From a training folder written by `scripts/train.py --model_dir=DIR` (its latest
checkpoint plus the metrics JSON the run wrote at its end):

    .venv/bin/python scripts/export.py --model_dir=runs/digits_gaussian

From a saved Keras model (a `.keras` file, or a legacy `.h5` one) and the privacy
record it was trained under (train.py's metrics JSON, or a JSON of
`tfdp.PrivacyResult.to_dict()`):

    .venv/bin/python scripts/export.py --model_path=model.keras \
        --privacy_json=results/train_metrics.json --name=digits

Writes `--export_dir/NAME/VERSION/` (default `saved_models/`, the next free
version) and prints where, with the privacy statement. The privacy record is in
`VERSION/assets.extra/privacy.json` (`tfdp.export.read_privacy` reads it).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import sys
import types
from typing import Any, Dict, List, Optional, Tuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_SCRIPTS = os.path.dirname(os.path.abspath(__file__))
_REPO_ROOT = os.path.dirname(_SCRIPTS)
for _path in (_REPO_ROOT, _SCRIPTS):  # tfdp and models; train.py (the run's model builder)
    if _path not in sys.path:
        sys.path.insert(0, _path)

import _cli  # noqa: E402 (scripts/ is sys.path[0] when a script runs)

_cli.quiet_tensorflow_startup()

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags, logging  # noqa: E402

import tfdp  # noqa: E402
import tfdp.export  # noqa: E402

FLAGS = flags.FLAGS
# Checkpoint keys of the optimizer's counters (scripts/train.py saves the optimizer as
# "optimizer"). A Keras 3 optimizer is checkpointed by its attributes: `_iterations`, and the
# DP optimizers' ledger `_noisy_steps` and `_dropped_steps`.
_COUNTER_KEYS = {
    "applied_steps": "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE",
    "noisy_steps": "optimizer/_noisy_steps/.ATTRIBUTES/VARIABLE_VALUE",
    "dropped_steps": "optimizer/_dropped_steps/.ATTRIBUTES/VARIABLE_VALUE",
}
# Local paths in train.py's settings say nothing about the model; keep them out of the record.
_PATH_SETTINGS = ("model_dir", "export_dir", "metrics_path")


def define_flags() -> None:
    """The script's flags (`--helpful` lists them)."""
    flags.DEFINE_string("model_dir", None, "A scripts/train.py --model_dir: the latest checkpoint "
                        "is exported, with the privacy record of the run's metrics JSON.")
    flags.DEFINE_string("metrics_path", None, "The run's metrics JSON when train.py wrote it "
                        "elsewhere than <model_dir>/metrics.json (its --metrics_path).")
    flags.DEFINE_string("model_path", None, "Or: a saved Keras model (a .keras file, or a "
                        "legacy .h5 one). Needs --privacy_json.")
    flags.DEFINE_string("privacy_json", None, "With --model_path: train.py's metrics JSON, a "
                        "JSON of tfdp.PrivacyResult.to_dict(), or another export's privacy.json.")
    flags.DEFINE_string("export_dir", "saved_models", "TF Serving base folder; the model goes "
                        "to <export_dir>/<name>/<version>/.")
    flags.DEFINE_string("name", None, "Model name (URL-safe; default: train.py's "
                        "<dataset>_<mechanism>_<schedule>, or the --model_path file name).")
    flags.DEFINE_integer("version", None, "Version number (default: the next free one; existing "
                         "versions are never overwritten).")
    flags.DEFINE_enum("from_logits", "auto", ("auto", "true", "false"),
                      "Whether the model outputs logits (auto: read from its last layer).")
    flags.DEFINE_string("input_name", tfdp.export.DEFAULT_INPUT_NAME,
                        "Name of the serving signature's input.")


# ----- reading what train.py wrote -----

def _load_json(path: str, what: str) -> Dict[str, Any]:
    if not os.path.isfile(path):
        raise ValueError(f"{what} {path!r} does not exist.")
    with open(path, encoding="utf-8") as f:
        try:
            record = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{what} {path!r} is not valid JSON: {error}.") from None
    if not isinstance(record, dict):
        raise ValueError(f"{what} {path!r} must hold a JSON object.")
    return record


def training_settings(metrics: Dict[str, Any]) -> Dict[str, Any]:
    """train.py's settings from a metrics record (no local paths), with its step ledger."""
    settings = {k: v for k, v in (metrics.get("config") or {}).items() if k not in _PATH_SETTINGS}
    if metrics.get("ledger") is not None:
        settings["ledger"] = metrics["ledger"]
    if metrics.get("method") is not None:
        settings["method"] = metrics["method"]
    return settings


def privacy_from_json(path: str) -> Tuple[Dict[str, Any], Optional[Dict[str, Any]]]:
    """(privacy record, training settings or None) from a metrics JSON or a bare record."""
    record = _load_json(path, "--privacy_json")
    if isinstance(record.get("privacy"), dict):  # scripts/train.py's metrics record
        return record["privacy"], training_settings(record)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    # A bare record, or another export's privacy.json (its "inf" fields decoded).
    return tfdp.export.privacy_record.from_json(text, source=f"--privacy_json {path!r}"), None


def checkpoint_counters(checkpoint: str) -> Dict[str, int]:
    """The optimizer's step counters saved in a train.py checkpoint.

    A run without a DP optimizer has no noisy or dropped steps (0). A checkpoint
    without the optimizer's step counter (not train.py's, or from the Keras 2
    version of tfdp) is refused: its ledger cannot be checked.
    """
    reader = tf.train.load_checkpoint(checkpoint)
    names = reader.get_variable_to_shape_map()
    if _COUNTER_KEYS["applied_steps"] not in names:
        raise ValueError(
            f"Checkpoint {checkpoint} holds no Keras 3 optimizer step counter "
            f"({_COUNTER_KEYS['applied_steps']}), so its privacy ledger cannot be checked. Is it "
            "a checkpoint of scripts/train.py (a Keras 2 run's checkpoints do not load in Keras "
            "3: train again)?"
        )
    return {k: int(reader.get_tensor(key)) if key in names else 0
            for k, key in _COUNTER_KEYS.items()}


def restore_model(model: keras.Model, checkpoint: str) -> keras.Model:
    """The model as train.py checkpointed it (itself or its make_private wrap), weights restored.

    train.py checkpoints the model it trained: `tfdp.make_private(model)` for DP runs on
    the fast path, the plain model otherwise. In Keras 3 the two are tracked under
    different checkpoint paths (a Sequential keeps its layers in an inner functional
    model), so the weights are restored through whichever matches every weight.
    """
    candidates = [model]
    try:
        candidates.insert(0, tfdp.make_private(model))  # what DP runs train: tried first
    except ValueError:
        pass  # a model make_private refuses was trained as it is
    errors = []
    for candidate in candidates:
        status = tf.train.Checkpoint(model=candidate).restore(checkpoint).expect_partial()
        try:
            status.assert_existing_objects_matched()
        except AssertionError as error:
            errors.append(f"as {type(candidate).__name__}: {error}")
            continue
        return candidate
    raise ValueError(f"Checkpoint {checkpoint} does not hold every weight of the rebuilt "
                     f"model {model.name!r} ({'; '.join(errors)})")


def check_ledger(metrics: Dict[str, Any], counters: Dict[str, int], checkpoint: str) -> None:
    """Refuses a metrics record whose step counts differ from the checkpoint's (another run's)."""
    ledger = metrics.get("ledger") or {}
    differing = {k: (ledger.get(k), v) for k, v in counters.items() if ledger.get(k, 0) != v}
    if differing:
        details = ", ".join(f"{k}: metrics {a} vs checkpoint {b}"
                            for k, (a, b) in differing.items())
        raise ValueError(
            f"The metrics JSON's privacy record does not describe checkpoint {checkpoint} "
            f"({details}), so its epsilon does not hold for these weights. Rerun the same "
            "scripts/train.py command with this --model_dir: it resumes from the checkpoint and "
            "rewrites the metrics JSON; then export again."
        )


def load_from_model_dir(model_dir: str, metrics_path: Optional[str]) -> Tuple[
        keras.Model, Dict[str, Any], Dict[str, Any], Any]:
    """(model with the latest checkpoint's weights, privacy, training settings, TrainConfig)."""
    import train  # scripts/train.py: the model builder and settings of the run

    if not os.path.isdir(model_dir):
        raise ValueError(f"--model_dir {model_dir!r} does not exist.")
    checkpoint = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    if checkpoint is None:
        raise ValueError(f"--model_dir {model_dir!r} holds no checkpoint (checkpoints/); it must "
                         "be a folder written by scripts/train.py --model_dir.")
    metrics_path = metrics_path or os.path.join(model_dir, "metrics.json")
    if not os.path.isfile(metrics_path):
        raise ValueError(
            f"No metrics JSON at {metrics_path!r}: scripts/train.py writes it (with the privacy "
            "record) when a run ends. Rerun the same train.py command with this --model_dir to "
            "finish it, or pass --metrics_path if the run wrote it elsewhere."
        )
    metrics = _load_json(metrics_path, "The metrics JSON")
    for key in ("config", "dataset", "privacy"):
        if not isinstance(metrics.get(key), dict):
            raise ValueError(f"The metrics JSON {metrics_path!r} lacks its {key!r} entry; is it "
                             "scripts/train.py's output?")
    saved_settings = os.path.join(model_dir, "train_config.json")
    if os.path.isfile(saved_settings):
        settings = _load_json(saved_settings, "train_config.json")
        differing = sorted(k for k, v in settings.items() if metrics["config"].get(k, v) != v)
        if differing:
            raise ValueError(f"The metrics JSON {metrics_path!r} comes from a run with other "
                             f"settings than --model_dir {model_dir!r} ({differing}).")
    check_ledger(metrics, checkpoint_counters(checkpoint), checkpoint)

    fields = {f.name for f in dataclasses.fields(train.TrainConfig)}
    config = train.TrainConfig(**{k: v for k, v in metrics["config"].items() if k in fields})
    shape = types.SimpleNamespace(input_shape=tuple(metrics["dataset"]["input_shape"]),
                                  num_classes=int(metrics["dataset"]["num_classes"]))
    model = restore_model(train.build_model(config, shape), checkpoint)
    training = training_settings(metrics)
    training["checkpoint"] = os.path.basename(checkpoint)
    return model, metrics["privacy"], training, config


def load_keras_model(path: str) -> keras.Model:
    """A saved Keras model; tfdp's and models' custom layers are registered by the imports."""
    import models  # noqa: F401  (registers the project's custom layers, if any)

    if not os.path.exists(path):
        raise ValueError(f"--model_path {path!r} does not exist.")
    if os.path.isdir(path):
        # Keras 3 loads only .keras (and legacy .h5) files; model.save(dir) is gone.
        raise ValueError(
            f"--model_path {path!r} is a folder. Keras 3 cannot load a SavedModel folder (a "
            "Keras 2 model.save(dir), model.export() or an earlier export) as a Keras model: "
            "save the trained model with model.save('model.keras') and pass that file."
        )
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as error:  # pylint: disable=broad-except  (Keras raises many kinds)
        raise ValueError(f"Could not load a Keras model from {path!r}: {error}") from None
    if not isinstance(model, keras.Model):
        raise ValueError(f"{path!r} is not a Keras model (a plain SavedModel cannot be "
                         "re-exported here; export the Keras model it came from).")
    return model


def default_name(model_path: str) -> str:
    """A URL-safe model name from a file or folder name."""
    stem = os.path.basename(os.path.normpath(model_path))
    stem = re.sub(r"\.(keras|h5|hdf5)$", "", stem)
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", stem).lstrip("._-")
    return name or "model"


def _format_epsilon(value: Any) -> str:
    return "inf" if isinstance(value, float) and math.isinf(value) else f"{float(value):.4g}"


def run(
    *, model_dir: Optional[str] = None, metrics_path: Optional[str] = None,
    model_path: Optional[str] = None, privacy_json: Optional[str] = None,
    export_dir: str = "saved_models", name: Optional[str] = None, version: Optional[int] = None,
    from_logits: str = "auto", input_name: str = tfdp.export.DEFAULT_INPUT_NAME,
) -> str:
    """Exports as the flags (same names) say, prints a summary; returns the version folder."""
    if bool(model_dir) == bool(model_path):
        raise ValueError("Give exactly one of --model_dir (a scripts/train.py --model_dir) or "
                         "--model_path (a saved Keras model, with --privacy_json).")
    if model_dir:
        if privacy_json:
            raise ValueError("--privacy_json goes with --model_path; with --model_dir the "
                             "privacy record comes from the run's metrics JSON (--metrics_path).")
        import train

        model, privacy, training, config = load_from_model_dir(model_dir, metrics_path)
        name = name or train.export_name(config)  # the run's --export_name, or its default
    else:
        if metrics_path:
            raise ValueError("--metrics_path goes with --model_dir; with --model_path pass the "
                             "privacy record as --privacy_json.")
        if not privacy_json:
            raise ValueError(
                "--model_path needs --privacy_json: the export carries the privacy guarantee "
                "the model was trained under (train.py's metrics JSON, or a JSON of "
                "tfdp.PrivacyResult.to_dict(); a model trained without DP takes one with "
                "epsilon 'inf')."
            )
        privacy, training = privacy_from_json(privacy_json)
        model = load_keras_model(model_path)
        name = name or default_name(model_path)
    if from_logits not in ("auto", "true", "false"):
        raise ValueError(f"--from_logits must be auto, true or false, got {from_logits!r}.")
    path = tfdp.export.export_saved_model(
        model, export_dir, name, privacy=privacy, version=version, training=training,
        from_logits={"auto": None, "true": True, "false": False}[from_logits],
        input_name=input_name)
    record = tfdp.export.read_privacy(path)
    print(f"Exported {name!r} version {record['export']['version']} to {path}")
    print(f"Serving signature {tfdp.export.SIGNATURE_NAME!r}: input {input_name!r} "
          f"{record['export']['input']['shape']} -> 'probabilities', 'classes'")
    print(f"Privacy: epsilon={_format_epsilon(record['epsilon'])} (delta={record['delta']:g}), "
          f"formal guarantee: {'yes' if record['has_formal_guarantee'] else 'NO'}.")
    print(record["statement"].rstrip())
    print(f"Privacy record: {os.path.join(path, tfdp.export.RECORD_PATH)}")
    return path


def main(argv: List[str]) -> None:
    """Entry point."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # TF logs every SavedModel file it writes
    try:
        run(**{k: FLAGS[k].value for k in (
            "model_dir", "metrics_path", "model_path", "privacy_json", "export_dir", "name",
            "version", "from_logits", "input_name")})
    except ValueError as error:
        sys.exit(f"export.py: error: {error}")


if __name__ == "__main__":
    define_flags()
    from _cli import argv_with_helpful  # scripts/ is on sys.path when a script runs

    app.run(main, argv=argv_with_helpful())
