"""Evaluating a saved model: load it (Keras file or SavedModel), attack it, audit its claim.

What scripts/evaluate.py runs: members are a data set's training split,
non-members its test split.

    model = load_model(path)                    # a .keras file, or an export's version folder
    claim = load_claim(privacy_json, path)      # the accountant's epsilon/delta, or None
    evaluation = evaluate_privacy(model, members, nonmembers, claim=claim)
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from tfdp.attacks.attack_report import AttackReport
from tfdp.attacks.audit import AuditResult, audit
from tfdp.attacks.membership import membership_inference
from tfdp.attacks.utility import utility_metrics


class SignatureModel:
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


def load_model(path: str) -> Any:
    """The Keras model in file `path`, or the serving signature of SavedModel folder `path`."""
    import keras
    import tensorflow as tf

    try:
        import tfdp.models  # noqa: F401  (the project's model builders register custom layers)
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
    return SignatureModel(signature)


def fit_input_shape(x: np.ndarray, model: Any) -> np.ndarray:
    """Reshapes x to the model's input shape when only the layout differs (e.g. 8x8x1 vs 64)."""
    shape = getattr(model, "input_shape", None)
    if not isinstance(shape, tuple) or not shape or any(d is None for d in shape[1:]):
        return x
    per_example = tuple(int(d) for d in shape[1:])
    if tuple(x.shape[1:]) != per_example and int(np.prod(x.shape[1:])) == int(np.prod(per_example)):
        return x.reshape((len(x),) + per_example)
    return x


def load_claim(privacy_json: Optional[str], model_path: str) -> Optional[Dict[str, Any]]:
    """The accountant's claim (a dict with epsilon and delta), or None when there is none.

    From `privacy_json` (keys at the top level or under "privacy"), else from the
    export record of `model_path` (`tfdp.export.read_privacy`), else None.
    """
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


@dataclasses.dataclass
class Evaluation:
    """What `evaluate_privacy` found: the attacks' report, utility, and the audit (or None)."""

    report: AttackReport
    utility: Dict[str, Dict[str, Any]]
    audit: Optional[AuditResult]


def evaluate_privacy(
    model: Any,
    members: Tuple[np.ndarray, np.ndarray],
    nonmembers: Tuple[np.ndarray, np.ndarray],
    *,
    claim: Optional[Any] = None,
    attack_types: Optional[Sequence[str]] = None,
    slicing: Optional[Sequence[str]] = None,
    from_logits: Optional[bool] = None,
    batch_size: int = 256,
    seed: int = 0,
    backend: Optional[str] = None,
    trained_attacks_per_slice: bool = False,
    confidence: float = 0.95,
) -> Evaluation:
    """Membership inference (members vs non-members), train and test utility, and the audit.

    The inputs are reshaped to the model's input layout when only that differs. The
    audit runs when a claim (anything `tfdp.attacks.audit` reads) is given.
    """
    members = (fit_input_shape(members[0], model), members[1])
    nonmembers = (fit_input_shape(nonmembers[0], model), nonmembers[1])
    report = membership_inference(
        model, members, nonmembers, attack_types=attack_types, slicing=slicing,
        from_logits=from_logits, batch_size=batch_size, seed=seed, backend=backend,
        trained_attacks_per_slice=trained_attacks_per_slice,
    )
    utility = {
        "test": utility_metrics(model, nonmembers, from_logits=from_logits, batch_size=batch_size),
        "train": utility_metrics(model, members, from_logits=from_logits, batch_size=batch_size),
    }
    verdict = audit(report, claim, confidence=confidence) if claim else None
    return Evaluation(report=report, utility=utility, audit=verdict)
