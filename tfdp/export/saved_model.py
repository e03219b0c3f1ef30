"""`export_saved_model`: a trained Keras classifier as a TF Serving SavedModel, privacy attached."""

from __future__ import annotations

import datetime
import os
import shutil
import tempfile
from typing import Any, List, Mapping, Optional, Union

import keras
import tensorflow as tf

from tfdp.export.privacy_record import make_privacy_record, write_privacy_record
from tfdp.export.serving import (
    DEFAULT_INPUT_NAME,
    SIGNATURE_NAME,
    describe_serving,
    serving_module,
)
from tfdp.export.versions import check_model_name, check_version, list_versions


def _save(module: tf.Module, model: keras.Model, signature: Any, path: str) -> None:
    """tf.saved_model.save; if the call uses resources beyond variables, tracks the model too."""
    try:
        tf.saved_model.save(module, path, signatures={SIGNATURE_NAME: signature})
    except (AssertionError, ValueError) as error:
        if "untracked" not in str(error).lower():
            raise
        # Lookup tables and similar resources are only reachable through the Keras model.
        shutil.rmtree(path, ignore_errors=True)
        module.keras_model = model
        tf.saved_model.save(module, path, signatures={SIGNATURE_NAME: signature})


def inference_noise_layers(model: keras.Model) -> List[str]:
    """Names of the layers (nested ones too) told to stay noisy at inference."""
    # Keras 3 models have no `submodules`; _flatten_layers walks nested models and layers.
    layers = model._flatten_layers(include_self=False)  # pylint: disable=protected-access
    return [layer.name for layer in layers if getattr(layer, "active_at_inference", False) is True]


def check_export_target(
    base_dir: Union[str, os.PathLike], name: str, version: Optional[int] = None
) -> int:
    """Checks that `base_dir/name` can take an export; returns the version it would get.

    Raises ValueError for a bad name, a non-integer folder in `base_dir/name`, an
    existing `version` (never overwritten) or one that is not an integer >= 1. Call
    it before a long training run to fail early.
    """
    check_model_name(name)
    model_dir = os.path.join(os.fspath(base_dir), name)
    existing = list_versions(model_dir)
    if version is None:
        return existing[-1] + 1 if existing else 1
    version = check_version(version)
    if version in existing:
        raise ValueError(
            f"Version {version} of {name!r} already exists in {model_dir!r}; exported "
            f"versions are never overwritten. Pass version={existing[-1] + 1} (or "
            "version=None for the next free one), or delete that folder yourself."
        )
    return version


def export_saved_model(
    model: keras.Model,
    base_dir: Union[str, os.PathLike],
    name: str,
    *,
    privacy: Any,
    version: Optional[int] = None,
    training: Optional[Mapping[str, Any]] = None,
    from_logits: Optional[bool] = None,
    input_name: str = DEFAULT_INPUT_NAME,
) -> str:
    """Exports `model` to `base_dir/name/version/` for TF Serving, with its privacy record.

    The SavedModel has one signature, `serving_default`, taking `input_name` (a
    float batch shaped like the model's input, batch axis None) and returning
    "probabilities" (float32, (batch, num_classes): softmax of logits; a
    single-output binary model gets [1 - sigmoid(z), sigmoid(z)]) and "classes"
    (int64, (batch,), the predicted class). The model runs with training=False, so
    training-only noise layers and dropout are off. Only the variables and the
    traced computation are saved: loading needs neither Keras nor tfdp. A
    `tfdp.make_private` model exports like the model it wraps.

    The privacy record goes to `VERSION/assets.extra/privacy.json` (TF Serving
    ignores `assets.extra`); read it with `tfdp.export.read_privacy`. The version
    folder appears at once when complete (it is written to a hidden folder in
    `base_dir` first and then renamed), so a running TF Serving never sees half of it.

    Args:
      model: a built single-input Keras classifier (functional, Sequential or
        `tfdp.make_private`), outputting logits or probabilities.
      base_dir: TF Serving's base folder (e.g. "saved_models"); created if missing.
      name: the model name (a folder name; part of the URL /v1/models/NAME:predict).
      privacy: a `tfdp.PrivacyResult` or a dict with its keys ("epsilon",
        "epsilon_noisy_steps_only", "delta", "accountant", "statement", ...) and
        optionally "training" settings. Required: export refuses None.
      version: an integer >= 1 that does not exist yet; None takes the next free one
        (1 + the highest existing, or 1).
      training: training settings (clip norms, epochs, ...) to add to the record.
      from_logits: whether the model outputs logits; None reads it from the last
        layer (linear -> logits, softmax/sigmoid -> probabilities).
      input_name: the signature's input name (clients use it in gRPC requests).

    Returns:
      The version folder's path, `base_dir/name/version`.

    Raises:
      ValueError: no or invalid privacy record, an unbuilt or non-classifier model,
        a bad name, a version that exists (versions are never overwritten) or is not
        an integer >= 1, or a non-integer folder in `base_dir/name`.
    """
    record = make_privacy_record(privacy, training=training)
    version = check_export_target(base_dir, name, version)
    info = describe_serving(model, input_name=input_name, from_logits=from_logits)
    base_dir = os.fspath(base_dir)
    model_dir = os.path.join(base_dir, name)
    final_dir = os.path.join(model_dir, str(version))

    os.makedirs(base_dir, exist_ok=True)
    staging_root = tempfile.mkdtemp(prefix=f".{name}-export-", dir=base_dir)
    try:
        staging = os.path.join(staging_root, str(version))
        module, signature = serving_module(model, info)
        _save(module, model, signature, staging)
        record["export"] = {
            "name": name,
            "version": version,
            "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"),
            "keras_model": model.name,
            "keras_class": type(model).__name__,
            # Layers told to stay noisy at inference (e.g. ResidualPerturbation for noisy
            # ensembles): the served predictions are then random.
            "inference_noise_layers": inference_noise_layers(model),
            **info.to_dict(),
        }
        write_privacy_record(staging, record)
        os.makedirs(model_dir, exist_ok=True)
        if os.path.exists(final_dir):  # another export took this version meanwhile
            raise ValueError(f"Version folder {final_dir!r} appeared during the export; it was "
                             "left untouched. Export again to take the next free version.")
        os.rename(staging, final_dir)
    finally:
        shutil.rmtree(staging_root, ignore_errors=True)
    return final_dir
