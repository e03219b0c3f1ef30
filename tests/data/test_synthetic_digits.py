"""render_digits: public synthetic digits shaped like the UCI scans, repeatable by seed."""

import numpy as np
import pytest

from tfdp.data import load_dataset, render_digits


def test_shape_range_and_the_4x4_block_counts():
    x, y = render_digits(300, seed=3)
    assert x.shape == (300, 8, 8, 1) and x.dtype == np.float32 and y.shape == (300,)
    assert x.min() >= 0.0 and x.max() <= 1.0
    # Each pixel counts the ink of a 4x4 block: a multiple of 1/16, like the UCI digits.
    np.testing.assert_allclose(x * 16, np.round(x * 16), atol=1e-5)
    assert set(np.unique(y)) == set(range(10))
    assert (x.reshape(300, -1).sum(axis=1) > 0).all()  # no blank image


def test_the_same_seed_gives_the_same_digits_and_another_seed_others():
    a, la = render_digits(50, seed=7)
    b, lb = render_digits(50, seed=7)
    c, _ = render_digits(50, seed=8)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(a, c)


def test_the_elastic_bend_changes_the_images_and_a_negative_one_is_refused():
    plain, _ = render_digits(40, seed=1, elastic=0.0)
    bent, _ = render_digits(40, seed=1, elastic=80.0)
    assert not np.array_equal(plain, bent)
    with pytest.raises(ValueError, match="elastic"):
        render_digits(5, elastic=-1.0)
    with pytest.raises(ValueError):
        render_digits(0)


def test_labels_match_the_glyphs_and_look_like_the_real_digits():
    # A wrong label (or a blank or garbled glyph) would sink both nearest-mean accuracies.
    x, y = render_digits(3000, seed=0)
    flat = x.reshape(len(x), -1)
    means = np.stack([flat[y == d].mean(axis=0) for d in range(10)])
    x2, y2 = render_digits(500, seed=1)
    synthetic = (np.linalg.norm(x2.reshape(500, 1, -1) - means, axis=2).argmin(1) == y2).mean()
    assert synthetic > 0.5  # chance is 0.1; measured 0.67
    real = load_dataset("digits", seed=0)
    real_flat = real.x_train.reshape(len(real.x_train), -1)
    on_real = (np.linalg.norm(real_flat[:, None] - means, axis=2).argmin(1)
               == real.y_train).mean()
    assert on_real > 0.4  # four times chance: glyphs drawn like the scans, not a random code
