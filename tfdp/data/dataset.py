"""The in-memory data set record every tfdp loader returns, with its tf.data pipelines."""

from __future__ import annotations

import dataclasses
import secrets
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tfdp._validation import check_positive_int, check_probability
from tfdp.data.groups import count_groups, synthetic_groups
from tfdp.randomness import check_insecure_seed, derive_seed, warn_seed_ignored


@dataclasses.dataclass
class Dataset:
    """A classification data set held in memory, split into train and test (and maybe val).

    Features are float32 and ready to feed a model (images scaled to [0, 1] with a
    channel axis; tabular features standardized); labels are int64 class indices.

    Attributes:
      name: the data set's name as `load_dataset` knows it.
      x_train, y_train: training features and labels (the private data).
      x_test, y_test: held-out features and labels (never trained on).
      class_names: one name per class index.
      x_val, y_val: optional validation split (None when the source has none).
      description: where the data came from and how it was split and normalized.
      groups_train: optional privacy-unit id (e.g. patient id) per training example,
        for per-patient DP (`poisson_batches(groups=...)`); None when there are none.
      group_source: in words, where `groups_train` comes from (or why there is none).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: Tuple[str, ...]
    x_val: Optional[np.ndarray] = None
    y_val: Optional[np.ndarray] = None
    description: str = ""
    groups_train: Optional[np.ndarray] = None
    group_source: str = ""

    def __post_init__(self):
        self.class_names = tuple(str(c) for c in self.class_names)
        for split in ("train", "test", "val"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x is None and y is None and split == "val":
                continue
            if x is None or y is None:
                raise ValueError(f"Dataset {self.name!r}: give both x_{split} and y_{split}.")
            x = np.asarray(x, dtype=np.float32)
            y = np.asarray(y).reshape(-1).astype(np.int64)
            if len(x) != len(y):
                raise ValueError(
                    f"Dataset {self.name!r}: x_{split} has {len(x)} examples but y_{split} "
                    f"has {len(y)}."
                )
            if len(y) and (y.min() < 0 or y.max() >= len(self.class_names)):
                raise ValueError(
                    f"Dataset {self.name!r}: labels of the {split} split must be in "
                    f"[0, {len(self.class_names) - 1}], got [{y.min()}, {y.max()}]."
                )
            setattr(self, f"x_{split}", x)
            setattr(self, f"y_{split}", y)
        if len(self.y_train) == 0:
            raise ValueError(f"Dataset {self.name!r} has no training examples.")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(
                f"Dataset {self.name!r}: train and test inputs differ in shape "
                f"({self.x_train.shape[1:]} vs {self.x_test.shape[1:]})."
            )
        self._check_groups()

    def _check_groups(self) -> None:
        if self.groups_train is None:
            return
        groups = np.asarray(self.groups_train)
        if groups.ndim != 1 or len(groups) != self.num_train:
            raise ValueError(
                f"Dataset {self.name!r}: groups_train needs one id per training example "
                f"({self.num_train}), got shape {groups.shape}; subset it together with "
                "x_train, or pass groups_train=None."
            )
        self.groups_train = groups

    # ----- metadata -----

    @property
    def num_classes(self) -> int:
        """Number of classes (the model's output width)."""
        return len(self.class_names)

    @property
    def input_shape(self) -> Tuple[int, ...]:
        """Shape of one example, without the batch axis."""
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def num_train(self) -> int:
        """Number of training examples (the `num_examples` of the accountant)."""
        return int(len(self.y_train))

    @property
    def num_groups(self) -> Optional[int]:
        """Number of distinct groups (e.g. patients) in the training split; None without ids."""
        return None if self.groups_train is None else count_groups(self.groups_train)

    @property
    def num_test(self) -> int:
        """Number of test examples."""
        return int(len(self.y_test))

    @property
    def class_counts(self) -> Dict[str, int]:
        """Training examples per class name."""
        counts = np.bincount(self.y_train, minlength=self.num_classes)
        return {name: int(c) for name, c in zip(self.class_names, counts)}

    @property
    def class_weights(self) -> Dict[int, float]:
        """Balanced class weights from the training split: n / (num_classes * n_c).

        The form `model.fit(class_weight=...)` takes; a class absent from the
        training split gets weight 0. Note that weighting the loss scales each
        example's gradient before clipping, so it does not change the DP guarantee.
        """
        counts = np.bincount(self.y_train, minlength=self.num_classes)
        total = counts.sum()
        return {
            i: (float(total) / (self.num_classes * c) if c else 0.0) for i, c in enumerate(counts)
        }

    def summary(self) -> Dict[str, Any]:
        """A JSON-friendly description (sizes, shapes, classes, class weights, groups)."""
        return {
            "name": self.name,
            "num_train": self.num_train,
            "num_test": self.num_test,
            "num_val": None if self.y_val is None else int(len(self.y_val)),
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "class_counts": self.class_counts,
            "class_weights": {str(k): v for k, v in self.class_weights.items()},
            "description": self.description,
            "num_groups": self.num_groups,
            "group_source": self.group_source,
        }

    # ----- derived data sets -----

    def subset(
        self, max_train_examples: Optional[int] = None, max_test_examples: Optional[int] = None,
        *, seed: int = 0,
    ) -> "Dataset":
        """A copy keeping at most that many train / test examples (stratified, seeded).

        The kept training examples keep their group ids.
        """
        def take(y, limit):
            """Sorted indices of the examples to keep (a view-making slice for all)."""
            if limit is None:
                return slice(None)
            limit = check_positive_int("max_examples", limit)
            if limit >= len(y):
                return slice(None)
            counts = np.bincount(y)
            stratify = y if limit >= self.num_classes and counts[counts > 0].min() >= 2 else None
            if stratify is None:
                picked = np.random.default_rng(seed).permutation(len(y))[:limit]
            else:
                from sklearn.model_selection import train_test_split

                picked, _ = train_test_split(
                    np.arange(len(y)), train_size=limit, random_state=seed, stratify=stratify
                )
            return np.sort(picked)

        train = take(self.y_train, max_train_examples)
        test = take(self.y_test, max_test_examples)
        return dataclasses.replace(
            self, x_train=self.x_train[train], y_train=self.y_train[train],
            x_test=self.x_test[test], y_test=self.y_test[test],
            groups_train=self._groups_at(train),
        )

    def validation_split(self, fraction: float = 0.2, *, seed: int = 0) -> "Dataset":
        """A copy for tuning: `fraction` of the training split held out as its test split.

        The real test split is dropped, so nothing tuned on the copy has seen it. The
        held-out part is fixed by `seed`: stratified by class, or, when the examples have
        group ids (patients), `fraction` of the patients with all their examples, so that
        no patient is on both sides (a patient's other images would flatter the score).
        The training part keeps its group ids.
        """
        if self.groups_train is None or self.num_groups == self.num_train:
            # One example per patient (or no ids): a stratified split by example. Splitting
            # indices draws the same split as splitting the arrays (it depends on y and seed).
            train, held_out, _, _ = stratified_split(np.arange(self.num_train), self.y_train,
                                                     fraction, seed)
            how = "stratified"
        else:
            train, held_out = group_split(self.groups_train, fraction, seed)
            how = "whole patients"
        return dataclasses.replace(
            self, x_train=self.x_train[train], y_train=self.y_train[train],
            x_test=self.x_train[held_out], y_test=self.y_train[held_out],
            x_val=None, y_val=None, groups_train=self._groups_at(train),
            description=(f"{self.description} Validation copy: {fraction:g} of the training "
                         f"split held out ({how}, seed {seed}) as its test split; the "
                         "real test split is not included."))

    def with_synthetic_groups(
        self, *, min_size: int = 1, max_size: int = 5, seed: int = 0
    ) -> "Dataset":
        """A copy whose training examples are grouped into seeded pseudo-patients.

        For sources without patient ids: see `tfdp.data.synthetic_groups`. The
        pseudo-patients exercise per-group training; they say nothing about real patients.
        """
        groups = synthetic_groups(self.num_train, min_size=min_size, max_size=max_size,
                                  seed=seed)
        return dataclasses.replace(
            self, groups_train=groups,
            group_source=(f"synthetic pseudo-patients of {min_size}..{max_size} examples "
                          f"(seed {seed}); the source has no patient ids"))

    def map_inputs(self, transform: Callable[[np.ndarray], np.ndarray],
                   description: str = "") -> "Dataset":
        """A copy whose inputs (train, test and validation) are `transform(x)`.

        Labels, patient ids and the split are unchanged: for a fixed function of each
        example (a frozen feature extractor's output), computed once.
        """
        x_val = None if self.x_val is None else transform(self.x_val)
        return dataclasses.replace(
            self, x_train=transform(self.x_train), x_test=transform(self.x_test), x_val=x_val,
            description=f"{self.description} {description}".strip())

    def _groups_at(self, indices: Any) -> Optional[np.ndarray]:
        """The group ids of the training examples at `indices` (None without ids)."""
        return None if self.groups_train is None else self.groups_train[indices]

    # ----- tf.data pipelines -----

    def train_batches(
        self, batch_size: int, *, shuffle: bool = True, seed: Optional[int] = None,
        drop_remainder: bool = False, insecure_reproducible_seed: Optional[int] = None,
    ) -> tf.data.Dataset:
        """Training batches: reshuffled each epoch, fixed size.

        The accountants assume Poisson sampling; use `poisson_batches` for a
        pipeline that matches that assumption. The order is secret, as
        `poisson_batches`' samples are: drawn from the OS's entropy unless
        `insecure_reproducible_seed` is given (`seed` is no longer used; a warning
        says so).
        """
        batch_size = check_positive_int("batch_size", batch_size)
        if seed is not None:
            warn_seed_ignored("Dataset.train_batches", "the order of the batches")
        insecure_seed = check_insecure_seed(insecure_reproducible_seed)
        shuffle_seed = int(derive_seed(insecure_seed, "shuffle")[0] if insecure_seed is not None
                           else secrets.randbits(63))
        data = tf.data.Dataset.from_tensor_slices((self.x_train, self.y_train))
        if shuffle:
            data = data.shuffle(self.num_train, seed=shuffle_seed, reshuffle_each_iteration=True)
        return data.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)

    def test_batches(self, batch_size: int = 256) -> tf.data.Dataset:
        """Test batches in order."""
        return self._eval_batches(self.x_test, self.y_test, batch_size)

    def val_batches(self, batch_size: int = 256) -> Optional[tf.data.Dataset]:
        """Validation batches in order, or None when there is no validation split."""
        if self.y_val is None:
            return None
        return self._eval_batches(self.x_val, self.y_val, batch_size)

    def poisson_batches(self, batch_size: int, **kwargs: Any):
        """Poisson-sampled training batches (each example in each step with prob. batch/n).

        Delegates to `tfdp.data.poisson_batches` (the accounting layer's pipeline);
        extra keyword arguments are passed through to it.
        """
        from tfdp import data as data_package  # late: poisson lives beside this module

        if not hasattr(data_package, "poisson_batches"):
            raise NotImplementedError(
                "tfdp.data.poisson_batches is not available in this version of tfdp."
            )
        return data_package.poisson_batches(
            self.x_train, self.y_train, batch_size=batch_size, **kwargs
        )

    def cyclic_poisson_batches(self, batch_size: float, bands: int, **kwargs: Any):
        """Cyclic-Poisson-sampled training batches over `bands` folds (mechanism="banded_mf").

        Delegates to `tfdp.data.cyclic_poisson_batches`; keyword arguments pass through.
        """
        from tfdp.data.cyclic_poisson import cyclic_poisson_batches  # pylint: disable=import-outside-toplevel

        return cyclic_poisson_batches(self.x_train, self.y_train, batch_size, bands, **kwargs)

    @staticmethod
    def _eval_batches(x, y, batch_size):
        batch_size = check_positive_int("batch_size", batch_size)
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)


def _check_test_fraction(test_fraction) -> float:
    """A held-out fraction strictly between 0 and 1."""
    test_fraction = check_probability("test_fraction", test_fraction)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"`test_fraction` must be strictly between 0 and 1, got {test_fraction}.")
    return test_fraction


def stratified_split(
    x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A seeded stratified train/test split (scikit-learn's), as (x_train, x_test, y_train, y_test)."""
    from sklearn.model_selection import train_test_split

    test_fraction = _check_test_fraction(test_fraction)
    return train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)


def group_split(groups: np.ndarray, test_fraction: float, seed: int
                ) -> Tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices): `test_fraction` of the groups held out whole (seeded)."""
    test_fraction = _check_test_fraction(test_fraction)
    from sklearn.model_selection import GroupShuffleSplit

    if count_groups(groups) < 2:
        raise ValueError("A split by group needs at least two groups.")
    splitter = GroupShuffleSplit(n_splits=1, test_size=test_fraction, random_state=seed)
    train, held_out = next(splitter.split(np.zeros(len(groups)), groups=groups))
    return np.sort(train), np.sort(held_out)


def ensure_channel_axis(images: np.ndarray) -> np.ndarray:
    """Adds a trailing channel axis to (n, h, w) grayscale images."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(
            f"Images must have shape (n, height, width) or (n, height, width, channels), "
            f"got {images.shape}."
        )
    return images


def class_names_or_indices(names: Optional[Sequence[str]], num_classes: int) -> Tuple[str, ...]:
    """The given class names, or "0", "1", ... when there are none."""
    if names is None:
        return tuple(str(i) for i in range(num_classes))
    return tuple(str(n) for n in names)
