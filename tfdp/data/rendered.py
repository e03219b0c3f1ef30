"""Rendered digits to train on, the real digits to test on: a data set with many examples.

`load_rendered_digits(num_train=...)` trains on `render_digits` (public synthetic 8x8 digits
drawn from fonts, as many as asked) and tests on every one of scikit-learn's 1797 real
handwritten digits, none of which is trained on. It gives a regime with many steps per
epoch at digit scale (thousands of examples where the bundled digits have 1437), where
mechanisms whose benefit grows with the number of steps (banded matrix factorization) can
be measured. The rendered training images are public, so their privacy costs nothing; the
data set treats them as private all the same (a stand-in for a large private set).
"""

from __future__ import annotations

import numpy as np

from tfdp._validation import check_positive_int
from tfdp.data.dataset import Dataset
from tfdp.data.synthetic_digits import render_digits

DEFAULT_NUM_TRAIN = 10000
DEFAULT_ELASTIC = 60.0


def load_rendered_digits(*, num_train: int = DEFAULT_NUM_TRAIN, seed: int = 0,
                         elastic: float = DEFAULT_ELASTIC) -> Dataset:
    """`num_train` rendered digits (seeded by `seed`) to train on; the 1797 real digits to test.

    About a millisecond per rendered digit. The test split is all of scikit-learn's
    `load_digits`, scaled to [0, 1] as `load_digits` does; the training images never
    include a real digit.
    """
    from sklearn import datasets

    num_train = check_positive_int("num_train", num_train)
    x_train, y_train = render_digits(num_train, seed=seed, elastic=elastic)
    real = datasets.load_digits()
    return Dataset(
        name="rendered_digits",
        x_train=x_train,
        y_train=y_train,
        x_test=(real.images.astype(np.float32) / 16.0)[..., None],
        y_test=real.target.astype(np.int64),
        class_names=tuple(str(c) for c in real.target_names),
        group_source="no patient ids (rendered examples)",
        description=(
            f"{num_train} digits rendered from fonts (tfdp.data.render_digits, seed {seed}, "
            f"elastic {elastic}) to train on; all 1797 scikit-learn digits to test on."
        ),
    )
