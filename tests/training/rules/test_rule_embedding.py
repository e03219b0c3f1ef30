"""EmbeddingRule against the brute-force per-example loop: repeated tokens, masks, shared
embeddings, sample weights; sparse embeddings are declined."""

import keras
import numpy as np
import pytest

from rule_check import check_against_brute_force

L = keras.layers
RULE = "rule:EmbeddingRule"


def _tokens(n=6, length=5, vocab=7, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(1, vocab, size=(n, length))
    x[0, :2] = x[0, 2]  # a token repeated in one example: its rows' gradients add up
    x[1, 3:] = 0  # padding (masked where mask_zero=True)
    return x, rng.integers(0, 3, size=n)


def _model(mask_zero=False):
    def make():
        tokens = keras.Input((5,), dtype="int32")
        hidden = L.Embedding(7, 4, mask_zero=mask_zero, name="e")(tokens)
        hidden = L.GlobalAveragePooling1D()(L.Dense(4, activation="tanh")(hidden))
        return keras.Model(tokens, L.Dense(3)(hidden))
    return make


@pytest.mark.parametrize("mask_zero", [False, True], ids=["plain", "mask_zero"])
def test_embedding_matches_brute_force(mask_zero):
    x, y = _tokens()
    assert check_against_brute_force(_model(mask_zero), x, y)["e"] == RULE


def test_an_embedding_shared_by_two_inputs_sums_both_lookups():
    def make():
        left, right = keras.Input((5,), dtype="int32"), keras.Input((5,), dtype="int32")
        shared = L.Embedding(7, 4, name="e")
        pooled = [L.GlobalAveragePooling1D()(shared(t)) for t in (left, right)]
        return keras.Model([left, right], L.Dense(3)(L.Concatenate()(pooled)))

    (x1, y), (x2, _) = _tokens(seed=0), _tokens(seed=1)
    assert check_against_brute_force(make, [x1, x2], y)["e"] == RULE


def test_sample_weights():
    x, y = _tokens()
    plan = check_against_brute_force(_model(True), x, y,
                                     sample_weight=np.array([2.0, 1.0, 0.0, 0.5, 1.0, 1.5]))
    assert plan["e"] == RULE


def test_a_subclass_with_its_own_call_is_declined_and_stays_exact():
    class ScaledEmbedding(L.Embedding):
        def call(self, inputs):
            return super().call(inputs) * 2.0

    def make():
        tokens = keras.Input((5,), dtype="int32")
        hidden = L.GlobalAveragePooling1D()(ScaledEmbedding(7, 4, name="e")(tokens))
        return keras.Model(tokens, L.Dense(3)(hidden))

    x, y = _tokens()
    assert check_against_brute_force(make, x, y)["e"] == "local"
