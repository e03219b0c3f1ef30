"""Tests for tfdp.data: the bundled loaders, the Dataset record and its pipelines."""

import numpy as np
import pytest
from sklearn import datasets as skdatasets
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from sklearn.utils.class_weight import compute_class_weight

import tfdp.data
from tfdp.data import Dataset, load_dataset


def _rows_as_set(x):
    return {row.tobytes() for row in np.ascontiguousarray(x.reshape(len(x), -1))}


# ----- digits -----

def test_digits_shapes_scale_and_split():
    ds = load_dataset("digits")
    raw = skdatasets.load_digits()
    assert ds.input_shape == (8, 8, 1)
    assert ds.num_classes == 10
    assert ds.num_train + ds.num_test == len(raw.target)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    # Every example is a raw digit divided by 16, with its own label.
    reference = {
        (raw.images[i].astype(np.float32) / 16.0).tobytes(): raw.target[i]
        for i in range(len(raw.target))
    }
    for x, y in zip(ds.x_test, ds.y_test):
        assert reference[x[..., 0].tobytes()] == y
    # Train and test are disjoint (compare by row; the data set has no duplicates across them).
    assert not _rows_as_set(ds.x_train) & _rows_as_set(ds.x_test)


def test_digits_split_is_stratified_and_seeded():
    ds = load_dataset("digits", seed=3)
    again = load_dataset("digits", seed=3)
    other = load_dataset("digits", seed=4)
    np.testing.assert_array_equal(ds.y_train, again.y_train)
    np.testing.assert_array_equal(ds.x_test, again.x_test)
    assert not np.array_equal(ds.y_test, other.y_test)
    overall = np.bincount(np.concatenate([ds.y_train, ds.y_test])) / (ds.num_train + ds.num_test)
    test_share = np.bincount(ds.y_test, minlength=10) / ds.num_test
    # Stratification keeps each class's share within one example of the overall share.
    assert np.all(np.abs(test_share - overall) <= 1.0 / ds.num_test + 1e-9)


def test_test_fraction_is_honoured():
    ds = load_dataset("digits", test_fraction=0.5)
    assert abs(ds.num_test - 1797 / 2) <= 1


# ----- breast cancer -----

def test_breast_cancer_standardized_with_train_statistics_only():
    ds = load_dataset("breast_cancer", seed=0)
    raw = skdatasets.load_breast_cancer()
    assert ds.input_shape == (30,) and ds.num_classes == 2
    assert ds.class_names == ("malignant", "benign")
    x_train, x_test, y_train, y_test = train_test_split(
        raw.data, raw.target, test_size=0.2, random_state=0, stratify=raw.target
    )
    scaler = StandardScaler().fit(x_train)
    np.testing.assert_allclose(ds.x_train, scaler.transform(x_train), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ds.x_test, scaler.transform(x_test), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(ds.y_test, y_test)
    np.testing.assert_allclose(ds.x_train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(ds.x_train.std(axis=0), 1.0, atol=1e-4)
    # Test statistics were not used: the test split is not exactly standardized itself.
    assert np.abs(ds.x_test.mean(axis=0)).max() > 1e-3


def test_class_weights_are_balanced_weights():
    ds = load_dataset("breast_cancer")
    expected = compute_class_weight("balanced", classes=np.arange(2), y=ds.y_train)
    assert ds.class_weights == pytest.approx({0: expected[0], 1: expected[1]})
    assert sum(ds.class_counts.values()) == ds.num_train


# ----- the record and its pipelines -----

def test_train_batches_cover_each_example_once_per_epoch_and_reshuffle():
    ds = load_dataset("digits").subset(200, 50)
    pipeline = ds.train_batches(64, seed=7)
    epochs = []
    for _ in range(2):
        ys, xs = [], []
        for x, y in pipeline:
            assert x.shape[0] <= 64
            xs.append(x.numpy())
            ys.append(y.numpy())
        epochs.append((np.concatenate(xs), np.concatenate(ys)))
    for xs, ys in epochs:
        assert len(ys) == 200
        assert _rows_as_set(xs) == _rows_as_set(ds.x_train)
        np.testing.assert_array_equal(np.sort(ys), np.sort(ds.y_train))
    assert not np.array_equal(epochs[0][1], epochs[1][1])  # reshuffled each epoch
    sizes = [int(x.shape[0]) for x, _ in ds.train_batches(64, drop_remainder=True)]
    assert sizes == [64, 64, 64]


def test_test_batches_keep_order():
    ds = load_dataset("breast_cancer")
    ys = np.concatenate([y.numpy() for _, y in ds.test_batches(50)])
    np.testing.assert_array_equal(ys, ds.y_test)
    assert ds.val_batches() is None


def test_subset_is_stratified_and_sized():
    ds = load_dataset("digits").subset(100, 30, seed=1)
    assert ds.num_train == 100 and ds.num_test == 30
    assert set(np.bincount(ds.y_train, minlength=10)) == {10}
    assert ds.subset(10_000).num_train == ds.num_train


def test_dataset_rejects_inconsistent_arrays():
    x = np.zeros((4, 3))
    with pytest.raises(ValueError, match="x_train has 4 examples"):
        Dataset("t", x, np.zeros(3), x, np.zeros(4), class_names=("a", "b"))
    with pytest.raises(ValueError, match=r"labels of the train split must be in \[0, 1\]"):
        Dataset("t", x, np.array([0, 1, 2, 0]), x, np.zeros(4), class_names=("a", "b"))


def test_load_dataset_errors_say_what_to_do():
    with pytest.raises(ValueError, match="Unknown data set 'mnist'.*digits"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="bundled"):
        load_dataset("digits", data_dir="/tmp")
    assert {"digits", "breast_cancer"} <= set(tfdp.data.available_datasets())
