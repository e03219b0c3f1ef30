"""DenseRule against the brute-force per-example loop: rank 2 (outer products), sequences
(ghost norm or materialized gradient, by the shapes), no bias, shared weights, weights, LoRA."""

import keras
import numpy as np
import pytest

from rule_check import check_against_brute_force

L = keras.layers
RULE = "rule:DenseRule"


def _data(shape, n=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n,) + shape).astype("float32"), rng.integers(0, 3, size=n)


def _model(shape, *layers):
    return lambda: keras.Sequential([keras.Input(shape), *[make() for make in layers],
                                     L.Flatten(), L.Dense(3, name="head")])


CASES = {
    "rank2": ((5,), lambda: L.Dense(4, activation="tanh", name="d")),
    "rank2_no_bias": ((5,), lambda: L.Dense(4, use_bias=False, name="d")),
    # 3 positions x (8 + 16) < 8 x 16: the ghost norm is cheaper.
    "sequence_ghost": ((3, 8), lambda: L.Dense(16, activation="relu", name="d")),
    # 12 positions x (2 + 3) > 2 x 3: the materialized per-example gradient is cheaper.
    "sequence_materialized": ((12, 2), lambda: L.Dense(3, name="d")),
    "image_features": ((3, 3, 4), lambda: L.Dense(5, activation="tanh", name="d")),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_dense_matches_brute_force(name):
    shape, layer = CASES[name]
    x, y = _data(shape)
    assert check_against_brute_force(_model(shape, layer), x, y)["d"] == RULE


@pytest.mark.parametrize("shape", [(5,), (4, 5)], ids=["rank2", "sequence"])
def test_a_dense_layer_called_twice_sums_both_calls(shape):
    def make():
        shared = L.Dense(5, activation="tanh", name="d")
        inputs = keras.Input(shape)
        return keras.Model(inputs, L.Dense(3)(L.Flatten()(shared(shared(inputs)))))

    x, y = _data(shape)
    assert check_against_brute_force(make, x, y)["d"] == RULE


def test_sample_weights():
    shape, layer = CASES["sequence_ghost"]
    x, y = _data(shape)
    plan = check_against_brute_force(_model(shape, layer), x, y,
                                     sample_weight=np.array([1.0, 0.0, 2.0, 0.5, 1.0, 3.0]))
    assert plan["d"] == RULE


def test_lora_takes_its_rule():
    # Keras's LoRA (more cases in test_rule_lora.py) takes the LoRA variant of the rule.
    def make():
        model = _model((5,), lambda: L.Dense(4, name="d"))()
        model.get_layer("d").enable_lora(2, b_initializer="glorot_uniform")
        return model

    x, y = _data((5,))
    assert check_against_brute_force(make, x, y)["d"] == "rule:DenseLoraRule"
