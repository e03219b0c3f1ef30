"""Per-example membership statistics read from a model's predictions.

The likelihood-ratio attack and the one-run audit both score an example by how
confident the model is in its label, on the logit scale
phi = log p_y - log(1 - p_y) (Carlini et al., 2022, section IV): on that scale the
confidence of one example across models trained with and without it is close to
Gaussian, which LiRA's fit assumes.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
from scipy import special

from tfdp.attacks._predictions import Predictions, predict


def logit_confidence(predictions: Predictions) -> np.ndarray:
    """phi_i = log p(y_i | x_i) - log(1 - p(y_i | x_i)), float64 (n,), finite.

    Computed from the normalized log-probabilities without forming 1 - p, so a
    confidence of 1 - 1e-12 keeps its magnitude instead of rounding to inf.
    """
    log_probs = predictions.log_probs
    rows = np.arange(len(predictions.labels))
    log_p = log_probs[rows, predictions.labels]
    others = log_probs.copy()
    others[rows, predictions.labels] = -np.inf
    log_rest = special.logsumexp(others, axis=1)  # log(1 - p_y), from the other classes
    return np.clip(log_p - log_rest, -1e6, 1e6)


def model_logit_confidence(model: Any, data: Any, *, from_logits: Optional[bool] = None,
                           batch_size: int = 256) -> np.ndarray:
    """`logit_confidence` of `model` (a Keras model or any callable) on `(x, y)` data."""
    return logit_confidence(predict(model, data, from_logits=from_logits, batch_size=batch_size))
