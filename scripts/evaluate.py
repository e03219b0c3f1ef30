"""Membership-inference evaluation, utility metrics and a privacy audit of a saved model.

    .venv/bin/python scripts/evaluate.py --model_path=model.keras --dataset=digits
        --output_dir=results/evaluate [--privacy_json=results/train_metrics.json]

Members are the data set's training split (cut to --max_train_examples like
scripts/train.py does, with the same --split_seed), non-members its test split.
Writes `evaluation.json` and `membership_inference.png` to --output_dir.
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any, Dict, Optional

from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The script's flags (`--help` / `--helpfull` list them)."""
    flags.DEFINE_string("model_path", None, "Saved Keras model (.keras, or a legacy .h5), or a "
                        "SavedModel folder with a serving_default signature (e.g. an export).")
    flags.DEFINE_string("dataset", "digits", "Data set: digits or breast_cancer (bundled with "
                        "scikit-learn), or any name tfdp.data.load_dataset knows.")
    flags.DEFINE_string("data_dir", None, "Folder of the data set (not for the bundled ones).")
    flags.DEFINE_integer("split_seed", 0, "Seed of the fixed stratified train/test split "
                         "(use the one the model was trained with).")
    flags.DEFINE_integer("max_train_examples", None, "Members: at most this many training "
                         "examples, picked as scripts/train.py picks them.")
    flags.DEFINE_integer("max_test_examples", None, "Non-members: at most this many test examples.")
    flags.DEFINE_string("output_dir", os.path.join("results", "evaluate"),
                        "Where evaluation.json and membership_inference.png go.")
    flags.DEFINE_list("attack_types", None, "Attacks (default all): threshold_attack, "
                      "threshold_entropy_attack, logistic_regression, multi_layered_perceptron, "
                      "random_forest, k_nearest_neighbors (or threshold, threshold-entropy, lr, "
                      "mlp, rf, knn).")
    flags.DEFINE_list("slicing", ["class"], "Slices besides the entire data set: class, "
                      "correctness, percentiles, or none.")
    flags.DEFINE_bool("trained_attacks_per_slice", False, "Also run the trained attacks on every "
                      "slice (slow); by default they run on the entire data set only.")
    flags.DEFINE_enum("from_logits", "auto", ("auto", "true", "false"),
                      "Whether the model outputs logits (auto: detect).")
    flags.DEFINE_integer("batch_size", 256, "Examples per forward pass.")
    flags.DEFINE_integer("seed", 0, "Seed of the attacks' shuffles and trained attackers.")
    flags.DEFINE_string("privacy_json", None, "JSON with the accountant's claim (keys epsilon and "
                        "delta at the top level or under 'privacy') to audit against. Without it, "
                        "the script tries tfdp.export.read_privacy(--model_path).")
    flags.DEFINE_float("confidence", 0.95, "Joint confidence of the audit's epsilon lower bound.")
    flags.DEFINE_string("backend", None, "scikit-learn backend for the trained attacks, e.g. "
                        "threading (default: single-threaded).")


def load_model(path: str) -> Any:
    """The Keras model in file `path`, or the serving signature of SavedModel folder `path`."""
    import keras
    import tensorflow as tf

    import tfdp  # noqa: F401  (registers tfdp's serializable layers, if any)

    try:
        import models  # noqa: F401  (the project's model builders register custom layers)
    except ImportError:
        pass
    if not os.path.exists(path):
        raise ValueError(f"--model_path {path!r} does not exist.")
    if not os.path.isdir(path):
        try:
            model = keras.models.load_model(path, compile=False)
        except Exception as error:  # pylint: disable=broad-except  (Keras raises many kinds)
            raise ValueError(f"Could not load a Keras model from {path!r}: {error}") from None
        if not isinstance(model, keras.Model):
            raise ValueError(f"{path!r} holds a {type(model).__name__}, not a Keras model.")
        return model
    # Keras 3 loads only model files; a folder is a SavedModel (e.g. a tfdp.export version
    # folder), called through its serving signature.
    try:
        loaded = tf.saved_model.load(path)
    except (OSError, ValueError, RuntimeError) as error:
        raise ValueError(f"{path!r} is a folder but not a SavedModel ({error}); pass a .keras "
                         "file or an exported version folder.") from None
    signature = getattr(loaded, "signatures", {}).get("serving_default")
    if signature is None:
        raise ValueError(
            f"{path!r} is a SavedModel without a serving_default signature; pass a .keras file "
            "or a tfdp.export version folder."
        )
    return _SignatureModel(signature)


class _SignatureModel:
    """Calls a SavedModel serving signature like a single-input, single-output Keras model."""

    def __init__(self, signature: Any):
        self._signature = signature
        _, kwargs = signature.structured_input_signature
        if len(kwargs) != 1:
            raise ValueError(f"The serving signature takes {sorted(kwargs)}; expected one input.")
        (self._input_name, spec), = kwargs.items()
        self.input_shape = tuple(spec.shape)
        self._dtype = spec.dtype

    def __call__(self, x: Any, training: bool = False) -> Any:
        import tensorflow as tf

        outputs = self._signature(**{self._input_name: tf.cast(x, self._dtype)})
        if "probabilities" in outputs:  # a tfdp.export signature: probabilities and classes
            return outputs["probabilities"]
        if len(outputs) != 1:
            raise ValueError(f"The serving signature returns {sorted(outputs)}; expected one "
                             "output or one named 'probabilities'.")
        return next(iter(outputs.values()))


def fit_input_shape(x: Any, model: Any) -> Any:
    """Reshapes x to the model's input shape when only the layout differs (e.g. 8x8x1 vs 64)."""
    import numpy as np

    shape = getattr(model, "input_shape", None)
    if not isinstance(shape, tuple) or not shape or any(d is None for d in shape[1:]):
        return x
    per_example = tuple(int(d) for d in shape[1:])
    if tuple(x.shape[1:]) != per_example and int(np.prod(x.shape[1:])) == int(np.prod(per_example)):
        return x.reshape((len(x),) + per_example)
    return x


def load_claim(privacy_json: Optional[str], model_path: str) -> Optional[Dict[str, Any]]:
    """The accountant's claim (a dict with epsilon and delta), or None when there is none."""
    if privacy_json:
        with open(privacy_json) as f:
            record = json.load(f)
        for candidate in (record, record.get("privacy") if isinstance(record, dict) else None):
            if isinstance(candidate, dict) and "epsilon" in candidate and "delta" in candidate:
                return candidate
        raise ValueError(
            f"--privacy_json {privacy_json!r} has no 'epsilon' and 'delta' (at the top level or "
            "under 'privacy')."
        )
    try:
        from tfdp import export

        return dict(export.read_privacy(model_path))
    except Exception:  # pylint: disable=broad-except  (no export record: no audit)
        return None


def load_members_and_nonmembers():
    """The data set's (train, test) split, cut like scripts/train.py cuts it."""
    try:
        from tfdp.data import load_dataset
    except ImportError:  # pragma: no cover  (tfdp.data ships with tfdp; kept for old checkouts)
        raise ValueError("tfdp.data is not available to load --dataset.") from None
    data = load_dataset(FLAGS.dataset, data_dir=FLAGS.data_dir, seed=FLAGS.split_seed)
    if FLAGS.max_train_examples or FLAGS.max_test_examples:
        data = data.subset(FLAGS.max_train_examples, FLAGS.max_test_examples, seed=FLAGS.split_seed)
    return data


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return _jsonable(value.item())
    return value


def main(argv) -> None:
    del argv
    if not FLAGS["verbosity"].present:
        # The attack library logs every attack at INFO; keep the output to our summary.
        logging.set_verbosity(logging.WARNING)
    if not FLAGS.model_path:
        raise app.UsageError("--model_path is required.")
    from tfdp import attacks

    from_logits = {"auto": None, "true": True, "false": False}[FLAGS.from_logits]
    slicing = [s for s in FLAGS.slicing if s != "none"] or None
    model = load_model(FLAGS.model_path)
    data = load_members_and_nonmembers()
    members = (fit_input_shape(data.x_train, model), data.y_train)
    nonmembers = (fit_input_shape(data.x_test, model), data.y_test)

    report = attacks.membership_inference(
        model, members, nonmembers,
        attack_types=FLAGS.attack_types, slicing=slicing, from_logits=from_logits,
        batch_size=FLAGS.batch_size, seed=FLAGS.seed, backend=FLAGS.backend,
        trained_attacks_per_slice=FLAGS.trained_attacks_per_slice,
    )
    utility = {
        "test": attacks.utility_metrics(model, nonmembers, from_logits=from_logits,
                                        batch_size=FLAGS.batch_size),
        "train": attacks.utility_metrics(model, members, from_logits=from_logits,
                                         batch_size=FLAGS.batch_size),
    }
    claim = load_claim(FLAGS.privacy_json, FLAGS.model_path)
    audit = attacks.audit(report, claim, confidence=FLAGS.confidence) if claim else None

    os.makedirs(FLAGS.output_dir, exist_ok=True)
    plot_path = report.plot(os.path.join(FLAGS.output_dir, "membership_inference.png"))
    result = {
        "model_path": FLAGS.model_path,
        "dataset": FLAGS.dataset,
        "data_description": getattr(data, "description", ""),
        "members": "training split", "non_members": "test split",
        "utility": utility,
        "membership_inference": report.to_dict(),
        "audit": audit.to_dict() if audit else None,
        "audit_note": None if audit else "No privacy claim found (--privacy_json): no audit.",
        "plot": plot_path,
    }
    json_path = os.path.join(FLAGS.output_dir, "evaluation.json")
    with open(json_path, "w") as f:
        json.dump(_jsonable(result), f, indent=2)

    print(report.summary())
    print("Utility (test): " + ", ".join(
        f"{k} {v}" if isinstance(v, int) else f"{k} {v:.4f}" for k, v in utility["test"].items()))
    print(audit.message if audit else result["audit_note"])
    print(f"Wrote {json_path} and {plot_path}")


if __name__ == "__main__":
    define_flags()
    from _cli import argv_with_helpful  # scripts/ is on sys.path when a script runs

    app.run(main, argv=argv_with_helpful())
