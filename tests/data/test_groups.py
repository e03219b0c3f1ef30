"""Per-group (per-patient) Poisson sampling, group ids and where the loaders get them."""

import dataclasses
import math

import numpy as np
import pytest
import tensorflow as tf

import tfdp.data
from tfdp.accounting.counting import steps_from_epochs
from tfdp.data import (Dataset, count_groups, load_dataset, patient_id_from_filename,
                       poisson_batches, synthetic_groups)


def grouped_data(sizes, seed=0):
    """Examples 1..n (x = [i, -i], y = i; 0 marks a pad) in groups of `sizes`, shuffled."""
    ids = np.repeat([f"patient{g}" for g in range(len(sizes))], sizes)
    ids = np.random.default_rng(seed).permutation(ids)
    index = np.arange(1, len(ids) + 1)
    x = np.stack([index, -index], axis=1).astype(np.float32)
    return x, index.astype(np.int64), ids


def members(ids):
    """Group id -> the set of its example numbers (1-based, as in `grouped_data`)."""
    out = {}
    for i, g in enumerate(ids):
        out.setdefault(g, set()).add(i + 1)
    return out


def steps(dataset):
    return [tf.nest.map_structure(lambda part: part.numpy(), element) for element in dataset]


def rows(batch):
    """(taken example numbers, their weights, pad weights) for each sampled group."""
    _, y, w = batch
    for labels, weights in zip(y, w):
        yield labels[weights > 0], weights[weights > 0], weights[weights == 0]


# ----- the batches -----

SIZES = [1, 2, 3, 5, 1, 4, 2, 1, 3, 2, 5, 1]


def test_grouped_batches_hold_each_sampled_group_whole_with_weights():
    x, y, ids = grouped_data(SIZES)
    groups = members(ids)
    slots = max(SIZES)
    dataset = poisson_batches(x, y, 4, groups=ids, num_steps=40, insecure_reproducible_seed=3)
    x_spec, y_spec, w_spec = dataset.element_spec
    assert x_spec.shape.as_list() == [None, slots, 2]
    assert y_spec.shape.as_list() == [None, slots]
    assert w_spec.shape.as_list() == [None, slots] and w_spec.dtype.name == "float32"
    sampled = steps(dataset)
    for xb, yb, wb in sampled:
        assert xb.shape[0] == yb.shape[0] == wb.shape[0]
        seen = []
        for labels, weights, pads in rows((xb, yb, wb)):
            group = [g for g, m in groups.items() if labels[0] in m][0]
            # Every example of the group exactly once, and nothing else.
            assert sorted(labels) == sorted(groups[group])
            np.testing.assert_allclose(weights, slots / len(groups[group]))
            assert len(pads) == slots - len(labels)
            seen += list(labels)
        assert len(seen) == len(set(seen))  # no group twice in a step
        # Features stay paired with labels; pads are zero in x and y.
        np.testing.assert_array_equal(xb[..., 0], yb.astype(np.float32))
        np.testing.assert_array_equal(xb[..., 1], -yb.astype(np.float32))
        assert np.all(xb[wb == 0] == 0) and np.all(yb[wb == 0] == 0)
    assert len({len(b[2]) for b in sampled}) > 1  # U varies


def test_slot_mean_of_weighted_values_is_the_group_mean():
    x, y, ids = grouped_data(SIZES)
    for xb, _, wb in poisson_batches(x, y, 6, groups=ids, num_steps=5, insecure_reproducible_seed=0):
        values = xb.numpy()[..., 0] ** 2  # any per-example loss
        for row_values, row_weights in zip(values, wb.numpy()):
            taken = row_values[row_weights > 0]
            assert np.mean(row_values * row_weights) == pytest.approx(taken.mean())


def test_empty_batches_keep_their_shape_and_nests_are_gathered_leaf_by_leaf():
    x, y, ids = grouped_data([2, 3, 1, 2, 1])
    nest = {"image": x, "pair": np.stack([x, 2 * x], axis=1)}
    dataset = poisson_batches(nest, y, 0.25, groups=ids, num_steps=40, insecure_reproducible_seed=1)
    assert dataset.element_spec[0]["pair"].shape.as_list() == [None, 3, 2, 2]
    sampled = steps(dataset)
    empty = [b for b in sampled if len(b[2]) == 0]
    assert empty  # P(empty) = 0.95^5 per step
    xb, yb, wb = empty[0]
    assert xb["image"].shape == (0, 3, 2) and yb.shape == (0, 3) and wb.shape == (0, 3)
    for xb, yb, wb in sampled:
        np.testing.assert_array_equal(xb["pair"][:, :, 1], 2 * xb["image"])


def test_seed_reproduces_grouped_batches_and_each_pass_is_fresh():
    x, y, ids = grouped_data(SIZES)

    def labels(dataset):
        return [b[1] for b in steps(dataset)]

    dataset = poisson_batches(x, y, 4, groups=ids, num_steps=6, insecure_reproducible_seed=5,
                              max_examples_per_group=2)
    first, second = labels(dataset), labels(dataset)
    assert any(a.shape != b.shape or not np.array_equal(a, b) for a, b in zip(first, second))
    again = labels(poisson_batches(x, y, 4, groups=ids, num_steps=6, insecure_reproducible_seed=5,
                                   max_examples_per_group=2))
    assert all(np.array_equal(a, b) for a, b in zip(first, again))


# ----- the sampling rate -----

def test_each_group_joins_with_probability_q_and_whole():
    sizes = [1 + (g % 4) for g in range(40)]
    x, y, ids = grouped_data(sizes, seed=1)
    groups = members(ids)
    num_steps, batch = 500, 8.0
    q = batch / len(sizes)
    joins = {g: 0 for g in groups}
    for batch_step in steps(poisson_batches(x, y, batch, groups=ids, num_steps=num_steps,
                                            insecure_reproducible_seed=11)):
        for labels, _, _ in rows(batch_step):
            group = ids[labels[0] - 1]
            assert set(labels) == groups[group]  # never part of a group
            joins[group] += 1
    counts = np.array(list(joins.values()))
    sigma = math.sqrt(num_steps * q * (1 - q))
    assert np.all(np.abs(counts - num_steps * q) < 5 * sigma)
    assert abs(counts.mean() - num_steps * q) < 5 * sigma / math.sqrt(len(counts))
    # Independent draws spread like Binomial(steps, q); a shuffled pass would not.
    assert abs(counts.var(ddof=1) / sigma**2 - 1) < 5 * math.sqrt(2 / (len(counts) - 1))


# ----- the cap -----

def test_cap_takes_a_fresh_random_subset_of_a_big_group():
    sizes = [10, 1, 2, 3, 4]
    x, y, ids = grouped_data(sizes, seed=2)
    groups = members(ids)
    cap, num_steps = 3, 400
    # batch_size = G: every group joins every step, so only the subsets are random.
    dataset = poisson_batches(x, y, len(sizes), groups=ids, num_steps=num_steps, insecure_reproducible_seed=4,
                              max_examples_per_group=cap)
    assert dataset.element_spec[2].shape.as_list() == [None, cap]
    taken = np.zeros(len(ids) + 1)
    for batch_step in steps(dataset):
        assert len(batch_step[2]) == len(sizes)
        for labels, weights, _ in rows(batch_step):
            group = groups[ids[labels[0] - 1]]
            assert len(labels) == min(len(group), cap) == len(set(labels))
            assert set(labels) <= group
            np.testing.assert_allclose(weights, cap / min(len(group), cap))
            taken[labels] += 1
    big = sorted(max(groups.values(), key=len))
    p = cap / 10
    sigma = math.sqrt(num_steps * p * (1 - p))
    assert np.all(np.abs(taken[big] - num_steps * p) < 5 * sigma)
    small = [i for g in groups.values() if len(g) <= cap for i in g]
    assert np.all(taken[small] == num_steps)  # groups within the cap are always whole


def test_cap_above_the_largest_group_changes_nothing():
    x, y, ids = grouped_data(SIZES)
    dataset = poisson_batches(x, y, 4, groups=ids, num_steps=3, insecure_reproducible_seed=0,
                              max_examples_per_group=50)
    assert dataset.element_spec[0].shape.as_list() == [None, max(SIZES), 2]


# ----- steps and errors -----

def test_epochs_count_passes_over_the_groups():
    x, y, ids = grouped_data(SIZES)
    num_groups = len(SIZES)
    assert count_groups(ids) == num_groups
    dataset = poisson_batches(x, y, 5, groups=ids, epochs=3, insecure_reproducible_seed=0)
    assert int(dataset.cardinality()) == steps_from_epochs(3, num_groups, 5) == math.ceil(
        3 * num_groups / 5)
    assert int(poisson_batches(x, y, 5, groups=ids).cardinality()) == math.ceil(num_groups / 5)
    assert int(poisson_batches(x, y, 5, groups=ids, num_steps=7).cardinality()) == 7


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(batch_size=len(SIZES) + 1), r"must not exceed the number of groups \(12\)"),
        (dict(y=None), "`y` is required with `groups`"),
        (dict(groups=np.zeros(5)), "one id per example"),
        (dict(groups=np.zeros((sum(SIZES), 1))), "1-D"),
        (dict(max_examples_per_group=0), "max_examples_per_group"),
        (dict(max_examples_per_group=2.5), "max_examples_per_group"),
        (dict(groups=None, max_examples_per_group=2), "give `groups` too"),
        (dict(groups=[None] + ["a"] * (sum(SIZES) - 1)), "ids of one type|one type"),
    ],
)
def test_bad_grouped_input(kwargs, message):
    x, y, ids = grouped_data(SIZES)
    arguments = dict(x=x, y=y, batch_size=3, groups=ids)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        poisson_batches(**arguments)


def test_integer_ids_work_like_strings():
    x, y, ids = grouped_data(SIZES)
    codes = np.unique(ids, return_inverse=True)[1] * 7 + 100
    a = steps(poisson_batches(x, y, 4, groups=ids, num_steps=4, insecure_reproducible_seed=9))
    b = steps(poisson_batches(x, y, 4, groups=codes, num_steps=4, insecure_reproducible_seed=9))
    assert all(np.array_equal(p[1], r[1]) for p, r in zip(a, b))


# ----- synthetic groups -----

def test_synthetic_groups_are_seeded_runs_of_bounded_size():
    ids = synthetic_groups(103, min_size=2, max_size=5, seed=1)
    assert ids.dtype == np.int64 and ids.shape == (103,)
    sizes = np.bincount(ids)
    assert np.all(sizes > 0)  # ids are 0..G-1, every example in exactly one
    assert np.all((sizes[:-1] >= 2) & (sizes[:-1] <= 5)) and 1 <= sizes[-1] <= 5
    assert count_groups(ids) == len(sizes)
    np.testing.assert_array_equal(ids, synthetic_groups(103, min_size=2, max_size=5, seed=1))
    assert not np.array_equal(ids, synthetic_groups(103, min_size=2, max_size=5, seed=2))
    assert np.any(np.diff(ids) < 0)  # runs of a permutation, not of the example order
    assert len(set(np.bincount(synthetic_groups(50, min_size=3, max_size=3)))) <= 2
    with pytest.raises(ValueError, match="must be at least `min_size`"):
        synthetic_groups(10, min_size=4, max_size=3)
    with pytest.raises(ValueError, match="min_size"):
        synthetic_groups(10, min_size=0)


# ----- patient ids from file names -----

@pytest.mark.parametrize("name, patient", [
    ("person123_bacteria_456.jpeg", "person123"),
    ("person1_virus_6.jpeg", "person1"),
    ("IM-0115-0001.jpeg", "IM-0115"),
    ("NORMAL2-IM-0135-0001.jpeg", "NORMAL2-IM-0135"),
    ("NORMAL2-IM-1427-0001-0002.jpeg", "NORMAL2-IM-1427"),
    ("person3_virus_9.JPEG", "person3"),
    ("IM-0001-0001.Png", "IM-0001"),
    ("person1_bacteria_1.jpg", "person1"),
    ("/data/chest_xray/train/PNEUMONIA/person12_bacteria_3.jpeg", "person12"),
    ("img0.png", None),
    ("person12_bacteria.jpeg", None),
    ("person12_fungus_3.jpeg", None),
    ("IM-0115.jpeg", None),
    ("person1_virus_6.gif", None),
    ("xperson1_virus_6.jpeg", None),
    ("IM-0115-0001.jpeg.bak", None),
    ("", None),
])
def test_patient_id_from_filename(name, patient):
    assert patient_id_from_filename(name) == patient


def _write_image(path, level):
    """A flat 12x10 grayscale image at gray `level` (PNG or JPEG by extension)."""
    pixels = np.full((12, 10, 1), level, np.uint8)
    encode = tf.io.encode_png if path.suffix.lower() == ".png" else tf.io.encode_jpeg
    path.parent.mkdir(parents=True, exist_ok=True)
    tf.io.write_file(str(path), encode(pixels))


TRAIN_FILES = {
    "NORMAL": ["IM-0115-0001.jpeg", "IM-0115-0002.png", "NORMAL2-IM-0135-0001.jpeg",
               "NORMAL2-IM-1427-0001-0002.png", "NORMAL2-IM-1427-0001.jpeg"],
    "PNEUMONIA": ["person12_bacteria_1.jpeg", "person12_bacteria_3.png", "person1_virus_6.jpeg"],
}


def _make_collection(root, extra_train=()):
    """The public collection's layout and names; each file's gray level identifies it."""
    levels = {}
    for name in sorted({n for files in TRAIN_FILES.values() for n in files} | set(extra_train)):
        levels[name] = 20 + 20 * len(levels)
    for folder, names in TRAIN_FILES.items():
        for name in names:
            _write_image(root / "train" / folder / name, levels[name])
    for name in extra_train:
        _write_image(root / "train" / "NORMAL" / name, levels[name])
    _write_image(root / "test" / "NORMAL" / "IM-0001-0001.jpeg", 100)
    _write_image(root / "test" / "PNEUMONIA" / "person1_virus_7.jpeg", 200)
    return levels


def test_chest_xray_loader_recovers_patient_ids(tmp_path):
    levels = _make_collection(tmp_path / "chest_xray")
    ds = load_dataset("chest_xray", data_dir=str(tmp_path), image_size=8)
    assert ds.num_train == 8 and ds.num_groups == 5
    assert ds.group_source.startswith("patient ids from the file names")
    # Each training image's gray level names its file: the ids follow the examples.
    name_of_level = {level: name for name, level in levels.items()}
    for image, patient in zip(ds.x_train, ds.groups_train):
        level = min(name_of_level, key=lambda v: abs(v - image.mean() * 255))
        assert patient == patient_id_from_filename(name_of_level[level])
    patients = list(ds.groups_train)
    assert patients.count("person12") == 2 and patients.count("IM-0115") == 2
    assert patients.count("NORMAL2-IM-1427") == 2 and patients.count("person1") == 1
    assert ds.summary()["num_groups"] == 5
    # The ids drive per-patient batches directly.
    x_spec, _, w_spec = ds.poisson_batches(2, groups=ds.groups_train, num_steps=2,
                                           insecure_reproducible_seed=0).element_spec
    assert x_spec.shape.as_list() == [None, 2, 8, 8, 1] and w_spec.shape.as_list() == [None, 2]


def test_chest_xray_loader_without_parseable_names_has_no_groups(tmp_path):
    _make_collection(tmp_path, extra_train=("img0.png",))
    ds = load_dataset("chest_xray", data_dir=str(tmp_path), image_size=8)
    assert ds.groups_train is None and ds.num_groups is None
    assert "1 of 9 training file names" in ds.group_source
    assert "'img0.png'" in ds.group_source and "not available" in ds.group_source


# ----- the Dataset record -----

def _indexed_dataset(n=60):
    """x_train[i] = i, so kept rows say which ids they should carry."""
    x = np.arange(n, dtype=np.float32).reshape(n, 1)
    y = np.arange(n) % 3
    groups = np.array([f"p{(7 * i) % 23}" for i in range(n)])
    return Dataset("t", x, y, x[:9], y[:9], class_names=("a", "b", "c"), groups_train=groups,
                   group_source="made up"), groups


def test_subset_and_validation_split_keep_ids_with_their_examples():
    ds, groups = _indexed_dataset()
    assert ds.num_groups == 23
    small = ds.subset(20, seed=2)
    assert small.num_train == 20
    np.testing.assert_array_equal(small.groups_train, groups[small.x_train[:, 0].astype(int)])
    tuning = ds.validation_split(0.25, seed=1)
    assert tuning.num_train + tuning.num_test == 60
    np.testing.assert_array_equal(tuning.groups_train,
                                  groups[tuning.x_train[:, 0].astype(int)])
    assert tuning.group_source == "made up"
    # Whole patients are held out: a quarter of the 23 (rounded up), none on both sides.
    held_out = set(groups[tuning.x_test[:, 0].astype(int)])
    assert len(held_out) == 6 and not held_out & set(tuning.groups_train)
    assert "whole patients" in tuning.description
    again = ds.validation_split(0.25, seed=1)
    np.testing.assert_array_equal(again.x_test, tuning.x_test)
    assert set(groups[ds.validation_split(0.25, seed=2).x_test[:, 0].astype(int)]) != held_out
    np.testing.assert_array_equal(ds.subset().groups_train, groups)
    plain = load_dataset("digits").subset(50)
    assert plain.groups_train is None and plain.validation_split().groups_train is None


@pytest.mark.parametrize("ids", ["none", "one_per_patient"])
def test_validation_split_without_shared_patients_draws_the_same_split_as_before(ids):
    ds, _ = _indexed_dataset()
    ds = dataclasses.replace(ds, groups_train=None if ids == "none" else np.arange(60))
    from tfdp.data.dataset import stratified_split

    x_train, x_val, _, _ = stratified_split(ds.x_train, ds.y_train, 0.25, 1)
    tuning = ds.validation_split(0.25, seed=1)
    np.testing.assert_array_equal(tuning.x_train, x_train)
    np.testing.assert_array_equal(tuning.x_test, x_val)


def test_dataset_refuses_ids_that_do_not_match_the_examples():
    ds, groups = _indexed_dataset()
    with pytest.raises(ValueError, match="one id per training example"):
        Dataset("t", ds.x_train, ds.y_train, ds.x_test, ds.y_test, ds.class_names,
                groups_train=groups[:-1])


def test_with_synthetic_groups():
    ds = load_dataset("digits").subset(100)
    grouped = ds.with_synthetic_groups(min_size=2, max_size=4, seed=3)
    np.testing.assert_array_equal(grouped.groups_train,
                                  synthetic_groups(100, min_size=2, max_size=4, seed=3))
    assert grouped.num_groups == count_groups(grouped.groups_train)
    assert 25 <= grouped.num_groups <= 50
    assert grouped.group_source == ("synthetic pseudo-patients of 2..4 examples (seed 3); "
                                    "the source has no patient ids")
    assert ds.groups_train is None  # a copy
    summary = grouped.summary()
    assert summary["num_groups"] == grouped.num_groups
    assert summary["group_source"] == grouped.group_source


def test_loaders_say_where_ids_come_from(tmp_path):
    cancer = load_dataset("breast_cancer")
    np.testing.assert_array_equal(cancer.groups_train, np.arange(cancer.num_train))
    assert cancer.num_groups == cancer.num_train
    assert "coincide" in cancer.group_source
    digits = load_dataset("digits")
    assert digits.groups_train is None and "with_synthetic_groups" in digits.group_source
    assert digits.summary()["num_groups"] is None
    images = np.zeros((4, 6, 6), np.uint8)
    labels = np.array([[0], [1], [0], [1]], np.uint8)
    np.savez(tmp_path / "pneumoniamnist.npz", train_images=images, train_labels=labels,
             test_images=images, test_labels=labels)
    mnist = load_dataset("pneumonia_mnist", data_dir=str(tmp_path))
    assert mnist.groups_train is None
    assert mnist.group_source.startswith("PneumoniaMNIST carries no patient ids")
    assert "tfds:" in tfdp.data.available_datasets()
