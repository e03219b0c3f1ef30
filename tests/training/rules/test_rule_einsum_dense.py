"""EinsumDenseRule: exact per-example norms and clipped sums against a brute-force loop."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from rule_check import check_against_brute_force

import tfdp.training.rules.einsum_dense as einsum_dense  # noqa: F401  (registers the rule)
from tfdp.training.rules.einsum_dense import _parse
from tfdp.training.rules.registry import rule_for

RULE = "rule:EinsumDenseRule"
BATCH = 6


def _labels(batch=BATCH):
    return np.arange(batch) % 3


def _x(*shape):
    return np.random.default_rng(0).normal(size=(BATCH,) + shape).astype("float32")


def _model(input_shape, *layers):
    inputs = keras.Input(input_shape)
    h = inputs
    for layer in layers:
        h = layer(h)
    h = keras.layers.Flatten()(h) if len(h.shape) > 2 else h
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(h))


def _einsum(equation, output_shape, **kwargs):
    kwargs.setdefault("bias_initializer", "random_normal")
    return keras.layers.EinsumDense(equation, output_shape, name="ed", **kwargs)


# (equation, output_shape, bias_axes, input shape): the layer's math in all its roles.
CASES = {
    "dense": ("ab,bc->ac", 4, "c", (5,)),
    "sequence": ("abc,cd->abd", (6, 4), "d", (6, 3)),
    "qkv_projection": ("abc,cde->abde", (6, 2, 3), "de", (6, 5)),
    "qkv_no_bias": ("abc,cde->abde", (6, 2, 3), None, (6, 5)),
    "qkv_bias_last_axis": ("abc,cde->abde", (6, 2, 3), "e", (6, 5)),
    "output_projection": ("abcd,cde->abe", (6, 4), "e", (6, 2, 3)),
    "bias_over_positions": ("abc,cd->abd", (6, 4), "bd", (6, 3)),
    "positions_contracted": ("abc,bcd->ad", 4, "d", (6, 3)),
    "summed_input_axis": ("abc,cd->ad", 4, "d", (6, 3)),
    "per_head_kernel": ("abhd,hde->abhe", (5, 2, 4), "e", (5, 2, 3)),
    "transposed_kernel": ("abc,dc->adb", (4, 6), "d", (6, 3)),
    "left_ellipsis": ("...b,bc->...c", 4, "c", (6, 3)),
    "right_ellipsis": ("ab...,bc->ac...", 4, "c", (3, 6)),
    "few_positions_wide": ("abc,cd->abd", (2, 8), "d", (2, 8)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_equations(name):
    equation, output_shape, bias_axes, input_shape = CASES[name]
    plan = check_against_brute_force(
        lambda: _model(input_shape, _einsum(equation, output_shape, bias_axes=bias_axes)),
        _x(*input_shape), _labels())
    assert plan["ed"] == RULE


@pytest.mark.parametrize("ghost", [True, False])
@pytest.mark.parametrize("name", ["qkv_projection", "output_projection", "per_head_kernel",
                                  "dense", "summed_input_axis"])
def test_both_l2_forms_are_exact(name, ghost, monkeypatch):
    """The ghost norm and the materialized gradient agree whichever the shapes would pick."""
    monkeypatch.setattr(einsum_dense, "_use_ghost", lambda *args: ghost)
    equation, output_shape, bias_axes, input_shape = CASES[name]
    plan = check_against_brute_force(
        lambda: _model(input_shape, _einsum(equation, output_shape, bias_axes=bias_axes)),
        _x(*input_shape), _labels(), kinds=("l2",))
    assert plan["ed"] == RULE


def test_form_choice_follows_static_shapes():
    def picks_ghost(equation, output_shape, input_shape):
        layer = keras.layers.EinsumDense(equation, output_shape)
        a = tf.zeros((2,) + input_shape)
        z = layer(a)
        kshape = tuple(layer._kernel.shape)  # pylint: disable=protected-access
        return einsum_dense._use_ghost(kshape, [(_parse(equation, None, a.shape.rank), (a, z))])

    # T (K_in + K_out) < K_in K_out picks the ghost norm.
    assert picks_ghost("abc,cd->abd", (None, 64), (4, 64))          # 4 * 128 < 4096
    assert not picks_ghost("abc,cd->abd", (None, 4), (64, 4))       # 64 * 8 > 16
    assert picks_ghost("ab,bc->ac", 16, (16,))                      # one position
    assert not picks_ghost("abc,cde->abde", (None, 2, 4), (8, 16))  # 8 * 24 > 128


def test_activation():
    plan = check_against_brute_force(
        lambda: _model((6, 3), _einsum("abc,cd->abd", (6, 4), bias_axes="d",
                                       activation="tanh")),
        _x(6, 3), _labels())
    assert plan["ed"] == RULE


def test_called_twice_shares_weights():
    def make():
        inputs = keras.Input((6, 4))
        layer = _einsum("abc,cd->abd", (6, 4), bias_axes="d", activation="tanh")
        h = layer(layer(inputs))
        return keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(h)))

    plan = check_against_brute_force(make, _x(6, 4), _labels())
    assert plan["ed"] == RULE


@pytest.mark.parametrize("ghost", [True, False])
def test_called_twice_on_different_lengths(ghost, monkeypatch):
    """Two calls with different numbers of positions: their positions add up in one gradient."""
    monkeypatch.setattr(einsum_dense, "_use_ghost", lambda *args: ghost)

    def make():
        inputs = keras.Input((6, 3))
        layer = _einsum("abc,cd->abd", (None, 3), bias_axes="d")
        long, short = layer(inputs), layer(inputs[:, :2] * 2.0)
        h = keras.layers.Concatenate()([keras.layers.GlobalAveragePooling1D()(long),
                                        keras.layers.GlobalMaxPooling1D()(short)])
        return keras.Model(inputs, keras.layers.Dense(3)(h))

    plan = check_against_brute_force(make, _x(6, 3), _labels(),
                                     kinds=("l2",) if ghost else ("l2", "l1"))
    assert plan["ed"] == RULE


def test_sample_weights():
    plan = check_against_brute_force(
        lambda: _model((6, 5), _einsum("abc,cde->abde", (6, 2, 3), bias_axes="de")),
        _x(6, 5), _labels(), sample_weight=np.array([1.0, 0.5, 2.0, 0.0, 1.5, 0.25]))
    assert plan["ed"] == RULE


def test_frozen_kernel_trains_bias_only():
    def make():
        model = _model((6, 3), _einsum("abc,cd->abd", (6, 4), bias_axes="d"))
        model.get_layer("ed")._kernel.trainable = False  # pylint: disable=protected-access
        return model

    plan = check_against_brute_force(make, _x(6, 3), _labels())
    assert plan["ed"] == RULE


def test_multi_head_attention_takes_the_rule():
    """Self-attention over masked tokens: every projection of the attention takes the rule."""
    tokens = np.array([[3, 5, 7, 2, 9, 4, 0, 0],
                       [1, 1, 6, 0, 0, 0, 0, 0],
                       [8, 2, 3, 4, 5, 6, 7, 1],
                       [4, 9, 0, 0, 0, 0, 0, 0],
                       [2, 2, 2, 5, 5, 0, 0, 0],
                       [7, 3, 1, 8, 0, 0, 0, 0]], dtype="int32")

    def make():
        inputs = keras.Input((8,), dtype="int32")
        # Frozen: rule_check's brute force cannot yet read an embedding's IndexedSlices gradient.
        h = keras.layers.Embedding(10, 8, mask_zero=True, trainable=False, name="embedding")(inputs)
        attention = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4, name="mha")
        h = keras.layers.LayerNormalization(name="norm")(h + attention(h, h))
        h = keras.layers.Dense(6, activation="relu", name="ffn")(h)
        h = keras.layers.GlobalAveragePooling1D()(h)
        model = keras.Model(inputs, keras.layers.Dense(3, name="head")(h))
        # The key bias adds q_i . b to every score of query i, which the softmax cancels: its
        # gradient is zero up to round-off, which a relative comparison cannot check.
        attention._key_dense.bias.trainable = False  # pylint: disable=protected-access
        return model

    plan = check_against_brute_force(make, tokens, _labels())
    for name in ("query", "key", "value", "attention_output"):
        assert plan[name] == RULE, plan


def test_lora_takes_its_rule():
    # Keras's LoRA (more cases in test_rule_lora.py) takes the LoRA variant of the rule.
    def make():
        model = _model((5,), _einsum("ab,bc->ac", 4, bias_axes="c", lora_rank=2, lora_alpha=3))
        b_factor = model.get_layer("ed").lora_kernel_b
        b_factor.assign(np.random.default_rng(2).normal(size=b_factor.shape))
        return model

    plan = check_against_brute_force(make, _x(5), _labels())
    assert plan["ed"] == "rule:EinsumDenseLoraRule"


def test_quantized_is_declined():
    layer = keras.layers.EinsumDense("abc,cd->abd", (None, 4), bias_axes="d")
    layer(tf.zeros((2, 6, 3)))
    layer.quantize("int8")
    assert rule_for(layer) is None


@pytest.mark.parametrize("equation", [
    "ab,ac->ac",      # the batch letter is in the kernel
    "ba,bc->ac",      # the input's first letter is not the output's
    "abb,bc->ac",     # a diagonal of the input
])
def test_unsupported_equations_are_not_parsed(equation):
    assert _parse(equation, None, None) is None


def test_parse_roles():
    plan = _parse("abhd,hde->abhe", "he", None)
    assert (plan.batch, plan.positions, plan.groups, plan.contracted, plan.new, plan.bias) == (
        "a", "b", "h", "d", "e", "he")
    plan = _parse("...b,bc->...c", None, 3)
    assert plan.inp[-1] == "b" and plan.out[-1] == "c" and len(plan.inp) == 3
    assert _parse("...b,bc->...c", None, 1) is None  # the batch would be the kernel's `b`
