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
    pipeline = ds.train_batches(64, insecure_reproducible_seed=7)
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


# ----- file formats, made in tmp_path -----

def _write_image(path, pixels):
    import tensorflow as tf

    pixels = np.asarray(pixels, np.uint8)
    encode = tf.io.encode_png if str(path).endswith(".png") else tf.io.encode_jpeg
    path.parent.mkdir(parents=True, exist_ok=True)
    tf.io.write_file(str(path), encode(pixels))


def _make_xray_tree(root, counts, with_val=False):
    """counts: {split: {class: n}}; gray level encodes the class, sizes and formats vary."""
    for split, per_class in counts.items():
        for c, (name, n) in enumerate(per_class.items()):
            for i in range(n):
                ext = ".png" if i % 2 == 0 else ".jpeg"
                size = (20 + 3 * i, 16 + 2 * i)  # non-square, unequal sizes
                _write_image(root / split / name / f"img{i}{ext}",
                             np.full(size + (1,), 60 + 120 * c, np.uint8))
    return root


def test_chest_xray_folders_load_as_grayscale_resized_with_class_weights(tmp_path):
    root = _make_xray_tree(tmp_path / "xr", {
        "train": {"NORMAL": 2, "PNEUMONIA": 6}, "test": {"NORMAL": 1, "PNEUMONIA": 2},
        "val": {"NORMAL": 1, "PNEUMONIA": 1},
    })
    # An RGB file: loaded as grayscale (one channel) by luminance.
    _write_image(root / "train" / "NORMAL" / "rgb.png", np.tile([[[200, 0, 0]]], (12, 12, 1)))
    ds = load_dataset("chest_xray", data_dir=str(root), image_size=16)
    assert ds.class_names == ("NORMAL", "PNEUMONIA")
    assert ds.x_train.shape == (9, 16, 16, 1) and ds.x_test.shape == (3, 16, 16, 1)
    assert ds.x_val.shape == (2, 16, 16, 1)
    assert list(np.bincount(ds.y_train)) == [3, 6]
    # Gray levels survive decoding and resizing (JPEG within a few levels).
    for x, y in zip(ds.x_test, ds.y_test):
        np.testing.assert_allclose(x, (60 + 120 * y) / 255.0, atol=3 / 255)
    lum = 0.299 * 200 / 255.0  # ITU-R 601 luma of pure red 200
    assert any(np.allclose(x, lum, atol=3 / 255) for x in ds.x_train)
    # Balanced weights n / (k * n_c), computed by hand: 9/(2*3) and 9/(2*6).
    assert ds.class_weights == pytest.approx({0: 1.5, 1: 0.75})


def test_chest_xray_accepts_the_kaggle_parent_folder_and_no_val(tmp_path):
    _make_xray_tree(tmp_path / "chest_xray", {
        "train": {"NORMAL": 1, "PNEUMONIA": 1}, "test": {"NORMAL": 1, "PNEUMONIA": 1}})
    ds = load_dataset("chest_xray", data_dir=str(tmp_path), image_size=8)
    assert ds.num_train == 2 and ds.y_val is None and ds.input_shape == (8, 8, 1)


def test_chest_xray_errors_describe_the_layout(tmp_path):
    with pytest.raises(ValueError, match="needs --data_dir.*train/<CLASS>"):
        load_dataset("chest_xray")
    with pytest.raises(ValueError, match="does not exist.*Expected layout"):
        load_dataset("chest_xray", data_dir=str(tmp_path / "missing"))
    _make_xray_tree(tmp_path / "a", {"train": {"NORMAL": 1, "PNEUMONIA": 1}})
    with pytest.raises(ValueError, match="test'? is missing.*Expected layout"):
        load_dataset("chest_xray", data_dir=str(tmp_path / "a"))
    _make_xray_tree(tmp_path / "b", {"train": {"NORMAL": 1, "PNEUMONIA": 1},
                                     "test": {"NORMAL": 1, "OTHER": 1}})
    with pytest.raises(ValueError, match="must match"):
        load_dataset("chest_xray", data_dir=str(tmp_path / "b"))
    with pytest.raises(ValueError, match="does not take"):
        load_dataset("digits", image_size=16)


def _write_npz(path, sizes=(12, 5, 6), side=28):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in zip(("train", "val", "test"), sizes):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, side, side), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(n, 1).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return arrays


def test_pneumonia_mnist_npz(tmp_path):
    arrays = _write_npz(tmp_path / "d" / "pneumoniamnist.npz")
    ds = load_dataset("pneumonia_mnist", data_dir=str(tmp_path / "d"))
    assert ds.class_names == ("normal", "pneumonia")
    assert (ds.num_train, ds.num_test, len(ds.y_val)) == (12, 6, 5)
    np.testing.assert_allclose(ds.x_test[..., 0], arrays["test_images"] / 255.0, atol=1e-6)
    np.testing.assert_array_equal(ds.y_train, arrays["train_labels"].ravel())
    small = load_dataset("pneumonia_mnist", data_dir=str(tmp_path / "d" / "pneumoniamnist.npz"),
                         image_size=14)
    assert small.input_shape == (14, 14, 1)
    # Resizing to half averages 2x2 blocks (antialiased bilinear): check one block.
    np.testing.assert_allclose(small.x_train[0, 0, 0, 0],
                               arrays["train_images"][0, :2, :2].mean() / 255.0, atol=0.02)


def test_pneumonia_mnist_errors(tmp_path):
    with pytest.raises(ValueError, match="needs --data_dir.*train_images"):
        load_dataset("pneumonia_mnist")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no pneumoniamnist"):
        load_dataset("pneumonia_mnist", data_dir=str(tmp_path / "empty"))
    np.savez(tmp_path / "bad.npz", train_images=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"lacks \['train_labels', 'test_images', 'test_labels'\]"):
        load_dataset("pneumonia_mnist", data_dir=str(tmp_path / "bad.npz"))


def _tiny_tfds_builder_class():
    import tensorflow_datasets as tfds

    class TinyShapes(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        """Two classes of flat 8x8 images: dark (label 0) and light (label 1)."""

        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict({
                    "image": tfds.features.Image(shape=(8, 8, 1)),
                    "label": tfds.features.ClassLabel(names=["dark", "light"])}),
                supervised_keys=("image", "label"))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(0, 10),
                    "test": self._generate_examples(100, 4)}

        def _generate_examples(self, start, n):
            for i in range(n):
                label = i % 2
                yield start + i, {"image": np.full((8, 8, 1), 40 + 150 * label + i, np.uint8),
                                  "label": label}

    return TinyShapes


def test_tfds_dataset_prepared_locally_loads_from_its_files(tmp_path):
    # Prepared by a builder that is not registered: tfds finds it from the files alone,
    # as with a data set prepared on another machine and copied here.
    _tiny_tfds_builder_class()(data_dir=str(tmp_path)).download_and_prepare()
    ds = load_dataset("tfds:tiny_shapes", data_dir=str(tmp_path), image_size=4)
    assert ds.class_names == ("dark", "light")
    assert (ds.num_train, ds.num_test, ds.input_shape) == (10, 4, (4, 4, 1))
    # Each image is flat with gray level 40 + 150 * label + i: label and level agree.
    levels = ds.x_train[:, 0, 0, 0] * 255
    np.testing.assert_array_equal(ds.y_train, (levels > 115).astype(int))
    assert sorted(np.round(levels).astype(int)) == sorted(40 + 150 * (i % 2) + i for i in range(10))


def test_tfds_missing_data_says_how_to_prepare_it(tmp_path):
    with pytest.raises(ValueError, match="needs --data_dir"):
        load_dataset("tfds:mnist")
    with pytest.raises(ValueError, match="does not exist.*tfds build mnist"):
        load_dataset("tfds:mnist", data_dir=str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="not prepared in.*tfds build mnist.*--download"):
        load_dataset("tfds:mnist", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="does not know a data set 'no_such_set_xyz'"):
        load_dataset("tfds:no_such_set_xyz", data_dir=str(tmp_path))
