"""load_dataset("rendered_digits"): rendered digits to train on, every real digit to test on."""

import numpy as np
import pytest

from tfdp.data import available_datasets, load_dataset, render_digits


def test_trains_on_the_rendered_digits_and_tests_on_all_1797_real_ones():
    from sklearn import datasets

    data = load_dataset("rendered_digits", num_train=60, seed=4)
    x, y = render_digits(60, seed=4)
    np.testing.assert_array_equal(data.x_train, x)
    np.testing.assert_array_equal(data.y_train, y)
    real = datasets.load_digits()
    assert data.num_test == 1797 and data.x_test.shape == (1797, 8, 8, 1)
    np.testing.assert_allclose(data.x_test.sum(), real.images.sum() / 16.0, rtol=1e-6)
    np.testing.assert_array_equal(data.y_test, real.target)
    assert np.bincount(data.y_test).tolist() == np.bincount(real.target).tolist()
    # No real digit among the training images.
    train = {row.tobytes() for row in data.x_train}
    assert not train & {row.tobytes() for row in data.x_test}
    assert data.num_classes == 10 and "rendered_digits" in available_datasets()


def test_the_number_rendered_and_the_seed_are_the_callers():
    a = load_dataset("rendered_digits", num_train=25, seed=1)
    b = load_dataset("rendered_digits", num_train=25, seed=2)
    assert a.num_train == 25 and not np.array_equal(a.x_train, b.x_train)
    with pytest.raises(ValueError, match="num_train"):
        load_dataset("rendered_digits", num_train=0)
    with pytest.raises(ValueError, match="takes no data_dir"):
        load_dataset("rendered_digits", data_dir="/tmp", num_train=5)
