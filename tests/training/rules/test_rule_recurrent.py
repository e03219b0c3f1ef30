"""SimpleRNN / GRU / LSTM rule: the unrolled recurrence against Keras and a per-example loop."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf
from rule_check import check_against_brute_force

import tfdp.training.rules.recurrent as recurrent  # noqa: F401  (registers the rule)
from tfdp.training.rules.registry import rule_for

RULE = "rule:RecurrentRule"
B, T, D, U = 6, 6, 3, 4
VOCAB = 7
KINDS = ("simple", "gru", "gru_reset_before", "lstm")

rng = np.random.default_rng(0)
X = rng.normal(size=(B, T, D)).astype("float32")
Y = np.array([0, 1, 2, 1, 0, 2])
# Padded token sequences of varied lengths (0 is the padding id); one starts with padding.
LENGTHS = [6, 5, 3, 2, 1, 4]
TOKENS = np.zeros((B, T), np.int32)
for b, length in enumerate(LENGTHS):
    TOKENS[b, :length] = rng.integers(1, VOCAB, size=length)
TOKENS[5] = [0, 3, 4, 5, 2, 0]


def recurrent_layer(kind, units=U, **kwargs):
    if kind == "simple":
        return keras.layers.SimpleRNN(units, **kwargs)
    if kind == "gru":
        return keras.layers.GRU(units, reset_after=True, **kwargs)
    if kind == "gru_reset_before":
        return keras.layers.GRU(units, reset_after=False, **kwargs)
    return keras.layers.LSTM(units, **kwargs)


def head(h, return_sequences):
    if return_sequences:
        h = keras.layers.GlobalAveragePooling1D()(h)
    return keras.layers.Dense(3)(h)


def dense_model(kind, return_sequences=False, **kwargs):
    def make():
        inp = keras.Input((T, D))
        h = recurrent_layer(kind, return_sequences=return_sequences, name="rnn", **kwargs)(inp)
        return keras.Model(inp, head(h, return_sequences))
    return make


def embedding():
    return keras.layers.Embedding(VOCAB, D, mask_zero=True)


def masked_model(kind, return_sequences=False, **kwargs):
    def make():
        inp = keras.Input((T,), dtype="int32")
        h = embedding()(inp)
        h = recurrent_layer(kind, return_sequences=return_sequences, name="rnn", **kwargs)(h)
        return keras.Model(inp, head(h, return_sequences))
    return make


def check(make, x, **kwargs):
    # atol 1e-5 of the largest entry: a clipped sum that cancels (a bias summed over examples
    # of both signs) is ~50x smaller than its terms, and float32 rounding of the clip weights
    # alone (the core's norms are float32) then moves it by a few 1e-6 -- the same in float64.
    kwargs.setdefault("atol", 1e-5)
    return check_against_brute_force(make, x, Y, **kwargs)


# ----- the forward pass equals Keras's own -----

@pytest.mark.parametrize("kind", KINDS + ("gru_impl1", "lstm_impl1"))
def test_forward_equals_keras(kind):
    base = kind.replace("_impl1", "")
    extra = {"implementation": 1} if kind.endswith("_impl1") else {}
    mask = tf.constant(TOKENS != 0)
    for rs, state, back, bias, masked, zero in itertools.product(*[(False, True)] * 6):
        if zero and not masked:
            continue
        layer = recurrent_layer(base, return_sequences=rs, return_state=state, go_backwards=back,
                                use_bias=bias, zero_output_for_mask=zero, **extra)
        layer.build((None, T, D))
        for v in layer.weights:
            v.assign(rng.normal(size=v.shape).astype("float32") * 0.5)
        rule = rule_for(layer)
        assert isinstance(rule, recurrent.RecurrentRule)
        m = mask if masked else None
        want = layer(X, mask=m)
        got, _, _ = rule.forward(layer, tf.constant(X), mask=m)
        assert type(got) is type(want)
        for w, g in zip(tf.nest.flatten(want), tf.nest.flatten(got)):
            np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-6)


def test_forward_with_initial_state():
    for kind in KINDS:
        layer = recurrent_layer(kind, return_sequences=True)
        layer.build((None, T, D))
        states = [tf.constant(rng.normal(size=(B, U)).astype("float32"))
                  for _ in range(2 if kind == "lstm" else 1)]
        mask = tf.constant(TOKENS != 0)
        want = layer(X, initial_state=states, mask=mask)
        got, _, _ = rule_for(layer).forward(layer, tf.constant(X), initial_state=states, mask=mask)
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)


# ----- per-example norms and clipped sums against the brute-force loop -----

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("return_sequences", [False, True])
def test_plain(kind, return_sequences):
    plan = check(dense_model(kind, return_sequences), X)
    assert plan["rnn"] == RULE


@pytest.mark.parametrize("kind", KINDS)
def test_go_backwards(kind):
    plan = check(dense_model(kind, return_sequences=True, go_backwards=True), X)
    assert plan["rnn"] == RULE


@pytest.mark.parametrize("kind", KINDS)
def test_no_bias(kind):
    plan = check(dense_model(kind, use_bias=False), X)
    assert plan["rnn"] == RULE


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("return_sequences", [False, True])
def test_mask(kind, return_sequences):
    plan = check(masked_model(kind, return_sequences), TOKENS)
    assert plan["rnn"] == RULE


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_mask_go_backwards(kind):
    plan = check(masked_model(kind, return_sequences=True, go_backwards=True), TOKENS)
    assert plan["rnn"] == RULE


def test_sample_weights():
    weights = np.array([1.0, 0.5, 2.0, 0.0, 1.5, 1.0], np.float32)
    plan = check(masked_model("lstm"), TOKENS, sample_weight=weights)
    assert plan["rnn"] == RULE
    plan = check(dense_model("gru_reset_before", return_sequences=True), X, sample_weight=weights)
    assert plan["rnn"] == RULE


def test_stacked_layers():
    def make():
        inp = keras.Input((T,), dtype="int32")
        h = embedding()(inp)
        h = keras.layers.LSTM(U, return_sequences=True, name="first")(h)
        h = keras.layers.GRU(3, name="second")(h)
        return keras.Model(inp, keras.layers.Dense(3)(h))
    plan = check(make, TOKENS)
    assert plan["first"] == RULE and plan["second"] == RULE


@pytest.mark.parametrize("kind", ["simple", "gru_reset_before", "lstm"])
def test_called_twice(kind):
    def make():
        inp = keras.Input((T, D))
        layer = recurrent_layer(kind, name="rnn")
        h = keras.layers.Concatenate()([layer(inp), layer(keras.ops.flip(inp, axis=1) * 0.5)])
        return keras.Model(inp, keras.layers.Dense(3)(h))
    plan = check(make, X)
    assert plan["rnn"] == RULE


@pytest.mark.parametrize("method", ["ghost", "materialized"])
def test_l2_methods(monkeypatch, method):
    """Both exact L2 forms (the tiny test shapes would otherwise always materialize)."""
    monkeypatch.setattr(recurrent.RecurrentRule, "l2_method", method)
    for kind in KINDS:
        plan = check(masked_model(kind, return_sequences=True), TOKENS, kinds=("l2",))
        assert plan["rnn"] == RULE


def test_return_state():
    def make():
        inp = keras.Input((T, D))
        out, h, c = keras.layers.LSTM(U, return_sequences=True, return_state=True, name="rnn")(inp)
        pooled = keras.layers.GlobalAveragePooling1D()(out)
        return keras.Model(inp, keras.layers.Dense(3)(keras.layers.Concatenate()([pooled, c])))
    plan = check(make, X)
    assert plan["rnn"] == RULE


@pytest.mark.parametrize("kind, return_sequences", [("gru", True), ("lstm", False)])
def test_bidirectional_masked(kind, return_sequences):
    """Bidirectional runs two copies (one go_backwards, zero_output_for_mask with sequences)."""
    def make():
        inp = keras.Input((T,), dtype="int32")
        h = embedding()(inp)
        layer = recurrent_layer(kind, return_sequences=return_sequences)
        h = keras.layers.Bidirectional(layer, name="bi")(h)
        return keras.Model(inp, head(h, return_sequences))
    plan = check(make, TOKENS)
    assert [path for name, path in plan.items() if "ward_" in name] == [RULE, RULE]


def test_initial_state_from_upstream():
    def make():
        inp = keras.Input((T, D))
        h0 = keras.layers.Dense(U, name="h0")(keras.layers.GlobalAveragePooling1D()(inp))
        h = keras.layers.GRU(U, name="rnn")(inp, initial_state=[h0])
        return keras.Model(inp, keras.layers.Dense(3)(h))
    plan = check(make, X)
    assert plan["rnn"] == RULE and plan["h0"] == "rule:DenseRule"


def test_rnn_around_a_cell():
    def make():
        inp = keras.Input((T, D))
        h = keras.layers.RNN(keras.layers.GRUCell(U), name="rnn")(inp)
        return keras.Model(inp, keras.layers.Dense(3)(h))
    plan = check(make, X)
    assert plan["rnn"] == RULE


def test_frozen_bias():
    def make():
        model = dense_model("gru")()
        model.get_layer("rnn").cell.bias.trainable = False
        return model
    plan = check(make, X)
    assert plan["rnn"] == RULE


# ----- declined configurations take the exact fallback -----

def test_declined_long_sequence(monkeypatch):
    monkeypatch.setattr(recurrent.RecurrentRule, "max_timesteps", T - 1)
    plan = check(masked_model("gru", return_sequences=True), TOKENS, kinds=("l2",))
    assert plan["rnn"] in ("local", "jacobian")


class _CustomCell(keras.layers.SimpleRNNCell):
    def call(self, sequence, states, training=False):
        output, new_states = super().call(sequence, states, training=training)
        return output * 2.0, [s * 2.0 for s in new_states]


def test_declined_custom_cell():
    def make():
        inp = keras.Input((T, D))
        h = keras.layers.RNN(_CustomCell(U), name="rnn")(inp)
        return keras.Model(inp, keras.layers.Dense(3)(h))
    plan = check(make, X, kinds=("l2",))
    assert plan["rnn"] in ("local", "jacobian")


def test_declined_mask_where_cudnn_would_run(monkeypatch):
    """With a GPU, Keras hands GRU/LSTM to cuDNN, whose padded outputs differ: masks decline."""
    monkeypatch.setattr(tf.config, "list_logical_devices",
                        lambda kind=None: ["GPU:0"] if kind == "GPU" else [])
    mask = tf.constant(TOKENS != 0)
    for layer, declines in [(keras.layers.LSTM(U), True), (keras.layers.GRU(U), True),
                            (keras.layers.GRU(U, reset_after=False), False),
                            (keras.layers.LSTM(U, use_cudnn=False), False),
                            (keras.layers.LSTM(U, activation="relu"), False),
                            (keras.layers.SimpleRNN(U), False)]:
        layer.build((None, T, D))
        rule = rule_for(layer)
        assert (rule.forward(layer, tf.constant(X), mask=mask) is None) == declines, layer
        assert rule.forward(layer, tf.constant(X)) is not None


def test_declined_dropout_and_stateful():
    assert rule_for(keras.layers.LSTM(U, dropout=0.5)) is None
    assert rule_for(keras.layers.GRU(U, recurrent_dropout=0.5)) is None
    assert rule_for(keras.layers.SimpleRNN(U, stateful=True)) is None
