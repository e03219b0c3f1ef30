"""Units of several rows (augmentation multiplicity, groups): every path clips the unit's mean.

Each case is one model per rule module, plus a layer on the local fallback and a tied
variable on the Jacobian path; the fast path's per-unit norms and clipped sum must equal
a loop over units, each unit's gradient taken from its rows' mean loss.
"""

import numpy as np
import pytest
import keras

from rule_check import check_against_brute_force

L = keras.layers
UNIT = 3


class _Scale(L.Layer):
    """A custom layer without a rule: the local fallback computes its gradient."""

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.w + 0.1 * x * x


class _Tied(keras.Model):
    """An embedding reused as the output projection: a tied variable, the Jacobian path."""

    def __init__(self):
        super().__init__(name="tied")
        self.embed = L.Embedding(7, 4)
        self.pool = L.GlobalAveragePooling1D()

    def call(self, ids):
        h = self.pool(self.embed(ids))
        return keras.ops.matmul(h, keras.ops.transpose(self.embed.embeddings))


def _seq(shape, *layers):
    return keras.Sequential([keras.Input(shape), *layers, L.Flatten(), L.Dense(3)])


def _tied():
    model = _Tied()
    model(np.zeros((1, 5), "int32"))
    return model


CASES = {
    "dense": ((5,), lambda: _seq((5,), L.Dense(4, activation="tanh")), "rule:DenseRule"),
    "dense_sequence": ((4, 3), lambda: _seq((4, 3), L.Dense(5)), "rule:DenseRule"),
    "conv2d": ((6, 6, 2), lambda: _seq((6, 6, 2), L.Conv2D(3, 3)), "rule:ConvRule"),
    "conv2d_ghost": ((5, 5, 8), lambda: _seq((5, 5, 8), L.Conv2D(16, 3, strides=2)),
                     "rule:ConvRule"),
    "conv_transpose": ((4, 4, 2), lambda: _seq((4, 4, 2), L.Conv2DTranspose(3, 3, strides=2)),
                       "rule:ConvTransposeRule"),
    "depthwise": ((6, 6, 2), lambda: _seq((6, 6, 2), L.DepthwiseConv2D(3)),
                  "rule:DepthwiseConvRule"),
    "separable": ((6, 6, 2), lambda: _seq((6, 6, 2), L.SeparableConv2D(3, 3)),
                  "rule:SeparableConvRule"),
    "einsum_dense": ((4, 3), lambda: _seq((4, 3), L.EinsumDense("btc,cd->btd", (4, 5),
                                                                 bias_axes="d")),
                     "rule:EinsumDenseRule"),
    "layer_norm": ((4, 3), lambda: _seq((4, 3), L.Dense(5), L.LayerNormalization()),
                   "rule:LayerNormalizationRule"),
    "group_norm": ((4, 4, 4), lambda: _seq((4, 4, 4), L.GroupNormalization(2)),
                   "rule:GroupNormalizationRule"),
    "prelu": ((5,), lambda: _seq((5,), L.Dense(4), L.PReLU()), "rule:PReLURule"),
    "lstm": ((4, 3), lambda: _seq((4, 3), L.LSTM(3, return_sequences=True)),
             "rule:RecurrentRule"),
    "local_fallback": ((5,), lambda: _seq((5,), _Scale()), "local"),
}


def _data(shape, n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n,) + shape).astype("float32"), rng.integers(0, 3, size=n)


@pytest.mark.parametrize("name", sorted(CASES))
def test_units_match_a_loop_over_units(name):
    shape, make, path = CASES[name]
    x, y = _data(shape, 4 * UNIT)
    plan = check_against_brute_force(make, x, y, unit_size=UNIT)
    assert path in plan.values(), plan


def test_units_with_embeddings_and_the_jacobian_path():
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 7, size=(4 * UNIT, 5)).astype("int32")
    y = rng.integers(0, 7, size=4 * UNIT)
    embed = lambda: keras.Sequential([keras.Input((5,), dtype="int32"), L.Embedding(7, 4),  # noqa
                                      L.Flatten(), L.Dense(7)])
    assert check_against_brute_force(embed, ids, y, unit_size=UNIT)[
        "embedding"] == "rule:EmbeddingRule"
    plan = check_against_brute_force(_tied, ids, y, unit_size=UNIT)
    assert "jacobian" in plan.values(), plan


def test_units_with_sample_weights():
    x, y = _data((5,), 4 * UNIT)
    weights = np.array([1.0, 0.0, 2.0] * 4)
    check_against_brute_force(lambda: _seq((5,), L.Dense(4)), x, y, unit_size=UNIT,
                              sample_weight=weights, kinds=("l2",))


def test_unit_size_must_divide_the_batch():
    import tfdp

    x, y = _data((5,), 5)
    model = _seq((5,), L.Dense(2))
    with pytest.raises(ValueError, match="divide the batch"):
        tfdp.training.clipped_gradient_sum(model, keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction=None), x, y, clip=1.0, unit_size=2)
