"""Utility of a classifier: accuracy, precision, recall, F1 and ROC-AUC (scikit-learn)."""

from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np
from sklearn import metrics

from tfdp._validation import check_probability
from tfdp.attacks import _predictions


def utility_metrics(
    model: Any,
    data: Any,
    *,
    from_logits: Optional[bool] = None,
    batch_size: int = 256,
    threshold: float = 0.5,
) -> Dict[str, Any]:
    """Accuracy, precision, recall, F1 and ROC-AUC of `model` on `data`.

    Binary models (one sigmoid/logit output, or two classes) use the positive
    class 1: predicted positive when P(class 1) >= `threshold`; precision, recall
    and F1 are the binary ones and "auc" is the ROC-AUC of P(class 1).
    Multi-class models predict the argmax; precision, recall and F1 are
    macro-averaged over the classes and "auc" is the one-vs-rest macro ROC-AUC.

    Args:
      model: a Keras model (or callable) returning logits or probabilities.
      data: an `(x, y)` tuple of arrays or a tf.data.Dataset of `(x, y)` batches;
        labels are class indices or one-hot.
      from_logits: True / False / None (detect), as in `membership_inference`.
      batch_size: examples per forward pass for NumPy inputs.
      threshold: decision threshold on P(class 1) for binary models.

    Returns:
      A dict of numbers: "accuracy", "precision", "recall", "f1", "auc" (NaN when
      some class has no example in `data`, so ROC-AUC is undefined), plus
      "num_examples" and "num_classes" (2 for a one-output binary model).
    """
    threshold = check_probability("threshold", threshold)
    predictions = _predictions.predict(
        model, data, from_logits=from_logits, batch_size=batch_size, name="data"
    )
    return metrics_from_predictions(predictions, threshold=threshold)


def metrics_from_predictions(
    predictions: "_predictions.Predictions", *, threshold: float = 0.5
) -> Dict[str, Any]:
    """The metrics of `utility_metrics` from already computed predictions."""
    y_true = predictions.labels
    probs = predictions.probs
    num_classes = predictions.num_classes
    if num_classes == 2:
        scores = probs[:, 1]
        y_pred = (scores >= threshold).astype(np.int64)
        average = "binary"
        auc_args = (y_true, scores)
        auc_kwargs: Dict[str, Any] = {}
    else:
        y_pred = probs.argmax(axis=1)
        average = "macro"
        auc_args = (y_true, probs)
        auc_kwargs = {"multi_class": "ovr", "average": "macro", "labels": np.arange(num_classes)}
    result: Dict[str, Any] = {
        "accuracy": float(metrics.accuracy_score(y_true, y_pred)),
        "precision": float(
            metrics.precision_score(y_true, y_pred, average=average, zero_division=0)
        ),
        "recall": float(
            metrics.recall_score(y_true, y_pred, average=average, zero_division=0)
        ),
        "f1": float(metrics.f1_score(y_true, y_pred, average=average, zero_division=0)),
    }
    # ROC-AUC needs positives and negatives for every class it averages over.
    if np.unique(y_true).size < num_classes:
        result["auc"] = float("nan")
    else:
        result["auc"] = float(metrics.roc_auc_score(*auc_args, **auc_kwargs))
    # Numbers only, so callers can float() every value.
    result.update(num_examples=int(predictions.num_examples), num_classes=int(num_classes))
    return result
