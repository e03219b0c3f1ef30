"""Real data bundled with scikit-learn (no download): handwritten digits and breast cancer."""

from __future__ import annotations

import numpy as np

from tfdp.data.dataset import Dataset, stratified_split

DEFAULT_TEST_FRACTION = 0.2
DEFAULT_SPLIT_SEED = 0


def load_digits(
    *, test_fraction: float = DEFAULT_TEST_FRACTION, seed: int = DEFAULT_SPLIT_SEED
) -> Dataset:
    """scikit-learn's handwritten digits: 1797 grayscale 8x8x1 images in [0, 1], 10 classes.

    The train/test split is stratified and fixed by `seed` (the same seed gives the
    same split on every machine).
    """
    from sklearn import datasets

    raw = datasets.load_digits()
    # Pixel intensities are integers 0..16.
    images = (raw.images.astype(np.float32) / 16.0)[..., None]
    x_train, x_test, y_train, y_test = stratified_split(images, raw.target, test_fraction, seed)
    return Dataset(
        name="digits",
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        class_names=tuple(str(c) for c in raw.target_names),
        group_source="no patient ids (use Dataset.with_synthetic_groups for pseudo-patients)",
        description=(
            "scikit-learn load_digits (UCI optical handwritten digits), 8x8x1 in [0, 1]; "
            f"stratified split, test fraction {test_fraction}, seed {seed}."
        ),
    )


def load_breast_cancer(
    *, test_fraction: float = DEFAULT_TEST_FRACTION, seed: int = DEFAULT_SPLIT_SEED
) -> Dataset:
    """scikit-learn's Wisconsin breast cancer: 569 patients, 30 features, binary diagnosis.

    Features are standardized with the mean and standard deviation of the TRAIN
    split only, so nothing about the test patients leaks into training. Those two
    statistics are computed from the private training data without noise, which the
    DP guarantee of training does not cover (a common shortcut; state it if it
    matters). Labels follow scikit-learn: 0 = malignant, 1 = benign.
    """
    from sklearn import datasets

    raw = datasets.load_breast_cancer()
    x_train, x_test, y_train, y_test = stratified_split(
        raw.data.astype(np.float64), raw.target, test_fraction, seed
    )
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std[std == 0] = 1.0  # a constant feature stays 0 instead of dividing by zero
    return Dataset(
        name="breast_cancer",
        x_train=(x_train - mean) / std,
        y_train=y_train,
        x_test=(x_test - mean) / std,
        y_test=y_test,
        class_names=tuple(str(c) for c in raw.target_names),
        groups_train=np.arange(len(y_train)),
        group_source=("one example per patient (the Wisconsin data has one row per patient): "
                      "per-patient and per-example DP coincide"),
        description=(
            "scikit-learn load_breast_cancer (Wisconsin diagnostic), 30 features standardized "
            f"with train-split statistics (not privatized); stratified split, test fraction {test_fraction}, "
            f"seed {seed}."
        ),
    )
