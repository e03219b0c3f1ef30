"""SavedModel exports of a run: right after training, or later from its model_dir.

The export carries the privacy record the weights were trained under (epsilon,
statement) plus the run's settings ("training", without local paths) and, from a
model_dir, the step ledger, checked against the checkpoint it exports.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import types
import warnings
from typing import Any, Callable, Dict, Optional, Tuple

import keras

import tfdp.export
from tfdp.run import checkpoint
from tfdp.run.config import PATH_SETTINGS, RunConfig

# Settings that do not describe the trained model: local paths (the private data's folder
# among them: a folder name can say whose data it is), and the attacks run after.
_NOT_TRAINING = PATH_SETTINGS + ("data_dir", "attack_types")
_FROM_LOGITS = {"auto": None, "true": True, "false": False}


def _without_paths(settings: Dict[str, Any]) -> Dict[str, Any]:
    """The settings that describe the trained model: no local paths, no attacks. A backbone's
    weights file is a path: what stays is whether the backbone was pretrained from a file."""
    kept = {k: v for k, v in settings.items() if k not in _NOT_TRAINING}
    if settings.get("backbone"):
        kept["backbone_pretrained"] = settings.get("backbone_weights") is not None
    return kept


def export_name(config: RunConfig) -> str:
    """config.export_name, or <dataset>_<mechanism>_<schedule> made URL-safe (tfds:x -> tfds_x)."""
    default = f"{config.dataset}_{config.mechanism}_{config.noise_schedule}"
    return config.export_name or default.replace(":", "_").replace("/", "_")


def export_trained(config: RunConfig, model: keras.Model, privacy: Any,
                   log: Callable[[str], None] = print) -> str:
    """Exports a just-trained model for TF Serving with its privacy record; returns the path."""
    record = dict(privacy.to_dict())
    record["training"] = _without_paths(dataclasses.asdict(config))
    path = tfdp.export.export_saved_model(model, config.export_dir, export_name(config),
                                          privacy=record)
    log(f"Exported the SavedModel to {path}")
    return path


# ----- reading what a run wrote -----

def load_json(path: str, what: str) -> Dict[str, Any]:
    """The JSON object in `path`; ValueErrors name `what` when it is missing or broken."""
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
    """A run's settings from its metrics record (no local paths), with its step ledger."""
    settings = _without_paths(metrics.get("config") or {})
    if metrics.get("ledger") is not None:
        settings["ledger"] = metrics["ledger"]
    if metrics.get("method") is not None:
        settings["method"] = metrics["method"]
    return settings


def privacy_from_json(path: str) -> Tuple[Dict[str, Any], Optional[Dict[str, Any]]]:
    """(privacy record, training settings or None) from a metrics JSON or a bare record."""
    record = load_json(path, "--privacy_json")
    if isinstance(record.get("privacy"), dict):  # a run's metrics record
        return record["privacy"], training_settings(record)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    # A bare record, or another export's privacy.json (its "inf" fields decoded).
    return tfdp.export.privacy_record.from_json(text, source=f"--privacy_json {path!r}"), None


def check_ledger(metrics: Dict[str, Any], counters: Dict[str, int], checkpoint_path: str) -> None:
    """Refuses a metrics record whose step counts differ from the checkpoint's (another run's)."""
    ledger = metrics.get("ledger") or {}
    differing = {k: (ledger.get(k), v) for k, v in counters.items() if ledger.get(k, 0) != v}
    if differing:
        details = ", ".join(f"{k}: metrics {a} vs checkpoint {b}"
                            for k, (a, b) in differing.items())
        raise ValueError(
            f"The metrics JSON's privacy record does not describe checkpoint {checkpoint_path} "
            f"({details}), so its epsilon does not hold for these weights. Rerun the same "
            "scripts/train.py command with this --model_dir: it resumes from the checkpoint and "
            "rewrites the metrics JSON; then export again."
        )


def load_from_model_dir(model_dir: str, metrics_path: Optional[str] = None) -> Tuple[
        keras.Model, Dict[str, Any], Dict[str, Any], RunConfig]:
    """(model with the latest checkpoint's weights, privacy, training settings, RunConfig).

    Checks that the metrics JSON belongs to the model_dir (same settings) and to its
    latest checkpoint (same step ledger): its epsilon must hold for these weights.
    """
    from tfdp.run.methods import build_model, make_optimizer  # (imported only when exporting)

    if not os.path.isdir(model_dir):
        raise ValueError(f"--model_dir {model_dir!r} does not exist.")
    latest = checkpoint.latest_checkpoint(model_dir)
    if latest is None:
        raise ValueError(f"--model_dir {model_dir!r} holds no checkpoint (checkpoints/); it must "
                         "be a folder written by scripts/train.py --model_dir.")
    metrics_path = metrics_path or os.path.join(model_dir, checkpoint.METRICS_FILE)
    if not os.path.isfile(metrics_path):
        raise ValueError(
            f"No metrics JSON at {metrics_path!r}: scripts/train.py writes it (with the privacy "
            "record) when a run ends. Rerun the same train.py command with this --model_dir to "
            "finish it, or pass --metrics_path if the run wrote it elsewhere."
        )
    metrics = load_json(metrics_path, "The metrics JSON")
    for key in ("config", "dataset", "privacy"):
        if not isinstance(metrics.get(key), dict):
            raise ValueError(f"The metrics JSON {metrics_path!r} lacks its {key!r} entry; is it "
                             "scripts/train.py's output?")
    saved_settings = os.path.join(model_dir, checkpoint.SETTINGS_FILE)
    if os.path.isfile(saved_settings):
        settings = load_json(saved_settings, checkpoint.SETTINGS_FILE)
        differing = sorted(k for k, v in settings.items() if metrics["config"].get(k, v) != v)
        if differing:
            raise ValueError(f"The metrics JSON {metrics_path!r} comes from a run with other "
                             f"settings than --model_dir {model_dir!r} ({differing}).")
    check_ledger(metrics, checkpoint.checkpoint_counters(latest), latest)

    fields = {f.name for f in dataclasses.fields(RunConfig)}
    config = RunConfig(**{k: v for k, v in metrics["config"].items()
                          if k in fields and k != "attack_types"})
    shape = types.SimpleNamespace(input_shape=tuple(metrics["dataset"]["input_shape"]),
                                  num_classes=int(metrics["dataset"]["num_classes"]))
    # With EMA, the run evaluated (and its record describes) the weights' moving average.
    optimizer = (None if config.ema_momentum is None else
                 make_optimizer(config, int(metrics["dataset"].get("num_train") or 1)))
    with warnings.catch_warnings():  # a backbone's weights all come from the checkpoint
        warnings.simplefilter("ignore", UserWarning)
        model = build_model(dataclasses.replace(config, backbone_weights=None), shape)
    model = checkpoint.restore_model(model, latest, optimizer)
    training = training_settings(metrics)
    training["checkpoint"] = os.path.basename(latest)
    return model, metrics["privacy"], training, config


def load_keras_model(path: str) -> keras.Model:
    """A saved Keras model; tfdp's and the models' custom layers are registered by the imports."""
    import tfdp.models  # noqa: F401  (registers the project's custom layers, if any)

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


def export_model(
    *, model_dir: Optional[str] = None, metrics_path: Optional[str] = None,
    model_path: Optional[str] = None, privacy_json: Optional[str] = None,
    export_dir: str = "saved_models", name: Optional[str] = None, version: Optional[int] = None,
    from_logits: str = "auto", input_name: str = tfdp.export.DEFAULT_INPUT_NAME,
) -> Tuple[str, str]:
    """Exports a run's model_dir, or a Keras file with its privacy JSON; returns (name, path).

    The arguments are scripts/export.py's flags (same names): exactly one of
    `model_dir` (its latest checkpoint, with the metrics JSON's privacy record) or
    `model_path` (a saved Keras model, with `privacy_json`).
    """
    if bool(model_dir) == bool(model_path):
        raise ValueError("Give exactly one of --model_dir (a scripts/train.py --model_dir) or "
                         "--model_path (a saved Keras model, with --privacy_json).")
    if model_dir:
        if privacy_json:
            raise ValueError("--privacy_json goes with --model_path; with --model_dir the "
                             "privacy record comes from the run's metrics JSON (--metrics_path).")
        model, privacy, training, config = load_from_model_dir(model_dir, metrics_path)
        name = name or export_name(config)  # the run's export_name, or its default
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
    if from_logits not in _FROM_LOGITS:
        raise ValueError(f"--from_logits must be auto, true or false, got {from_logits!r}.")
    path = tfdp.export.export_saved_model(
        model, export_dir, name, privacy=privacy, version=version, training=training,
        from_logits=_FROM_LOGITS[from_logits], input_name=input_name)
    return name, path
