"""tfdp.attacks.utility_metrics equals scikit-learn's metrics on a fixed, deterministic model."""

import numpy as np
import pytest
import keras
import tensorflow as tf
from scipy import special
from sklearn import metrics

from tfdp import attacks


def _dense_model(weights, bias, activation=None):
    """A one-layer model with the given weights: a fixed, deterministic classifier."""
    model = keras.Sequential(
        [keras.layers.Input((weights.shape[0],)), keras.layers.Dense(weights.shape[1], activation=activation)]
    )
    model.layers[-1].set_weights([weights, bias])
    return model


@pytest.fixture(scope="module")
def three_classes():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(300, 5)).astype(np.float32)
    w = rng.normal(size=(5, 3)).astype(np.float32)
    b = np.array([0.2, -0.1, 0.0], np.float32)
    # Labels follow the model most of the time, so the metrics are far from trivial.
    logits = x.astype(np.float64) @ w + b
    y = np.where(rng.random(300) < 0.7, logits.argmax(axis=1), rng.integers(0, 3, 300))
    return x, y, w, b, logits


def _sklearn_multiclass(y, logits):
    pred = logits.argmax(axis=1)
    return {
        "accuracy": metrics.accuracy_score(y, pred),
        "precision": metrics.precision_score(y, pred, average="macro"),
        "recall": metrics.recall_score(y, pred, average="macro"),
        "f1": metrics.f1_score(y, pred, average="macro"),
        "auc": metrics.roc_auc_score(y, special.softmax(logits, axis=1), multi_class="ovr", average="macro"),
    }


@pytest.mark.parametrize("activation", [None, "softmax"])
def test_multiclass_metrics_equal_sklearn(three_classes, activation):
    x, y, w, b, logits = three_classes
    expected = _sklearn_multiclass(y, logits)
    got = attacks.utility_metrics(_dense_model(w, b, activation), (x, y))
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key
    assert got["num_examples"] == 300 and got["num_classes"] == 3


def test_one_hot_labels_and_dataset_input_give_the_same_metrics(three_classes):
    x, y, w, b, _ = three_classes
    model = _dense_model(w, b)
    reference = attacks.utility_metrics(model, (x, y))
    one_hot = attacks.utility_metrics(model, (x, np.eye(3)[y]))
    dataset = attacks.utility_metrics(model, tf.data.Dataset.from_tensor_slices((x, y)).batch(17))
    small_batches = attacks.utility_metrics(model, (x, y), batch_size=7)
    for other in (one_hot, dataset, small_batches):
        for key in ("accuracy", "precision", "recall", "f1", "auc"):
            assert other[key] == pytest.approx(reference[key], abs=1e-9)


@pytest.fixture(scope="module")
def binary_problem():
    from sklearn.datasets import load_breast_cancer

    raw = load_breast_cancer()
    x = ((raw.data - raw.data.mean(axis=0)) / raw.data.std(axis=0)).astype(np.float32)
    y = raw.target
    rng = np.random.default_rng(5)
    # A weak fixed linear scorer: some mistakes of both kinds.
    w = (0.15 * rng.normal(size=(30, 1))).astype(np.float32)
    b = np.array([0.3], np.float32)
    z = (x.astype(np.float64) @ w + b)[:, 0]
    return x, y, w, b, z


@pytest.mark.parametrize("activation", [None, "sigmoid"])
def test_binary_single_output_metrics_equal_sklearn(binary_problem, activation):
    x, y, w, b, z = binary_problem
    pred = (z >= 0).astype(int)  # P(y=1) >= 0.5
    assert 0 < np.mean(pred != y) < 0.5
    expected = {
        "accuracy": metrics.accuracy_score(y, pred),
        "precision": metrics.precision_score(y, pred),
        "recall": metrics.recall_score(y, pred),
        "f1": metrics.f1_score(y, pred),
        "auc": metrics.roc_auc_score(y, z),
    }
    got = attacks.utility_metrics(_dense_model(w, b, activation), (x, y))
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key
    assert got["num_classes"] == 2


def test_two_class_softmax_uses_binary_metrics_for_class_1(binary_problem):
    x, y, w, b, z = binary_problem
    # Logits [0, z] give the same P(y=1) = sigmoid(z) as the one-output model.
    w2 = np.concatenate([np.zeros_like(w), w], axis=1)
    b2 = np.array([0.0, b[0]], np.float32)
    pred = (z >= 0).astype(int)
    got = attacks.utility_metrics(_dense_model(w2, b2, "softmax"), (x, y))
    assert got["precision"] == pytest.approx(metrics.precision_score(y, pred), abs=1e-6)
    assert got["f1"] == pytest.approx(metrics.f1_score(y, pred), abs=1e-6)
    assert got["auc"] == pytest.approx(metrics.roc_auc_score(y, z), abs=1e-6)


def test_auc_is_nan_when_a_class_is_missing(three_classes):
    x, y, w, b, logits = three_classes
    keep = y != 2
    got = attacks.utility_metrics(_dense_model(w, b), (x[keep], y[keep]))
    assert np.isnan(got["auc"])
    pred = logits[keep].argmax(axis=1)
    assert got["f1"] == pytest.approx(metrics.f1_score(y[keep], pred, average="macro"), abs=1e-9)


def test_bad_inputs_raise(three_classes):
    x, y, w, b, _ = three_classes
    model = _dense_model(w, b)
    with pytest.raises(ValueError, match="one label per example"):
        attacks.utility_metrics(model, (x, y[:-1]))
    with pytest.raises(ValueError, match="does not match a model with 3 classes"):
        attacks.utility_metrics(model, (x, np.eye(4)[y % 4]))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\]"):
        attacks.utility_metrics(model, (x, y + 1))
    with pytest.raises(ValueError, match="empty"):
        attacks.utility_metrics(model, (x[:0], y[:0]))
    with pytest.raises(ValueError, match="threshold"):
        attacks.utility_metrics(model, (x, y), threshold=1.5)
    with pytest.raises(ValueError, match=r"\(x, y\)"):
        attacks.utility_metrics(model, x)

    def not_probabilities(inputs, training=False):
        return tf.nn.sigmoid(model(inputs))  # each in [0, 1], rows do not sum to 1

    with pytest.raises(ValueError, match="not to 1"):
        attacks.utility_metrics(not_probabilities, (x, y), from_logits=False)
