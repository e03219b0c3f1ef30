"""The LoRA rules (Keras's `enable_lora` on Dense, EinsumDense, Embedding and Conv) against
the brute-force per-example loop: L2 and L1, rank 1 and 4 with lora_alpha != rank, one call
and two calls with sample weights; the frozen kernel gets no gradient; make_private plans
every trainable layer of a LoRA model on a rule and its step equals the loop's."""

import keras
import numpy as np
import pytest

import tfdp
from rule_check import brute_force, check_against_brute_force, loss_fn
from tfdp.training.rules import rule_for

L = keras.layers
BATCH = 6
ALPHA = 3  # s = lora_alpha / rank is 3 at rank 1 and 0.75 at rank 4
WEIGHTS = np.array([1.0, 0.0, 2.0, 0.5, 1.0, 3.0])


def _check(make, x, **kwargs):
    """check_against_brute_force at float32 round-off: against a float64 loop, the float32 loop
    and the rule both miss a bias's cancelling clipped sum by up to ~1e-5 of its largest entry."""
    return check_against_brute_force(make, x, _labels(), atol=2e-5, **kwargs)


def _enable(layer, rank, alpha=ALPHA):
    # Keras initializes B to zeros (A's gradient is then zero): random B tests A's gradient too.
    layer.enable_lora(rank, lora_alpha=alpha, b_initializer="glorot_uniform")


def _floats(shape, seed=0):
    return np.random.default_rng(seed).normal(size=(BATCH,) + shape).astype("float32")


def _tokens(shape, vocab=9, seed=0):
    x = np.random.default_rng(seed).integers(0, vocab, size=(BATCH,) + shape)
    x[0, :2] = x[0, 2]  # a token repeated in one example: its rows' gradients add up
    return x


def _labels():
    return np.arange(BATCH) % 3


# name: (input shape, integer inputs, layer factory, rule)
CASES = {
    "dense_2d": ((6,), False, lambda: L.Dense(5, activation="tanh", name="lora"), "DenseLoraRule"),
    "dense_3d": ((4, 6), False, lambda: L.Dense(5, name="lora"), "DenseLoraRule"),
    # Two positions of 16 features: at rank 4 the ghost norm is cheaper for A and B.
    "dense_3d_wide": ((2, 16), False, lambda: L.Dense(16, name="lora"), "DenseLoraRule"),
    "einsum_sequence": ((5, 4), False, lambda: L.EinsumDense(
        "abc,cd->abd", (5, 6), bias_axes="d", name="lora"), "EinsumDenseLoraRule"),
    "einsum_attention": ((5, 4), False, lambda: L.EinsumDense(
        "abc,cde->abde", (5, 2, 3), bias_axes="de", name="lora"), "EinsumDenseLoraRule"),
    "einsum_attention_output": ((5, 2, 3), False, lambda: L.EinsumDense(
        "abcd,cde->abe", (5, 4), bias_axes="e", name="lora"), "EinsumDenseLoraRule"),
    "embedding": ((5,), True, lambda: L.Embedding(9, 6, name="lora"), "EmbeddingLoraRule"),
    "conv1d_causal": ((8, 3), False, lambda: L.Conv1D(4, 3, padding="causal", name="lora"),
                      "ConvLoraRule"),
    "conv2d_strided": ((6, 6, 2), False, lambda: L.Conv2D(
        4, 3, strides=2, padding="same", activation="relu", name="lora"), "ConvLoraRule"),
    "conv2d_wide_input": ((5, 5, 5), False, lambda: L.Conv2D(6, 2, name="lora"),
                          "ConvLoraRule"),
}


def _frozen(layer):
    """W, the variable enable_lora freezes."""
    # pylint: disable-next=protected-access
    return layer._embeddings if isinstance(layer, L.Embedding) else layer._kernel


def _model(name, rank, calls):
    """Input -> the LoRA layer (called `calls` times, on the input and on tanh(input) or on a
    second token input) -> flatten and concatenate -> a Dense head."""
    shape, integer, make_layer, _ = CASES[name]

    def make():
        layer = make_layer()
        inputs = [keras.Input(shape, dtype="int32" if integer else "float32")
                  for _ in range(calls if integer else 1)]
        second = inputs[-1] if integer else L.Activation("tanh")(inputs[0])
        outputs = [layer(inputs[0])] + ([layer(second)] if calls == 2 else [])
        flat = [L.Flatten()(h) for h in outputs]
        h = flat[0] if len(flat) == 1 else L.Concatenate()(flat)
        model = keras.Model(inputs if len(inputs) > 1 else inputs[0], L.Dense(3, name="head")(h))
        _enable(layer, rank)
        return model

    return make


def _inputs(name, calls):
    shape, integer, _, _ = CASES[name]
    if not integer:
        return _floats(shape)
    return [_tokens(shape, seed=k) for k in range(calls)] if calls == 2 else _tokens(shape)


@pytest.mark.parametrize("rank", [1, 4])
@pytest.mark.parametrize("name", sorted(CASES))
def test_one_call(name, rank):
    plan = _check(_model(name, rank, 1), _inputs(name, 1))
    assert plan["lora"] == "rule:" + CASES[name][3]


@pytest.mark.parametrize("rank", [1, 4])
@pytest.mark.parametrize("name", sorted(CASES))
def test_called_twice_with_sample_weights(name, rank):
    plan = _check(_model(name, rank, 2), _inputs(name, 2), sample_weight=WEIGHTS)
    assert plan["lora"] == "rule:" + CASES[name][3]


@pytest.mark.parametrize("name", ["dense_3d", "einsum_attention", "embedding", "conv1d_causal"])
def test_a_kernel_made_trainable_again_is_included(name):
    def make():
        model = _model(name, 2, 1)()
        _frozen(model.get_layer("lora")).trainable = True
        return model

    plan = _check(make, _inputs(name, 1))
    assert plan["lora"] == "rule:" + CASES[name][3]


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_frozen_kernel_gets_no_gradient(name):
    model = _model(name, 2, 1)()
    layer = model.get_layer("lora")
    factors = [v for v in layer.trainable_variables if v.name.startswith("lora_")]
    bias = getattr(layer, "bias", None)
    assert not _frozen(layer).trainable and len(factors) == 2
    assert rule_for(layer).variables(layer) == factors + ([bias] if bias is not None else [])


def test_a_frozen_bias_and_a_frozen_factor_are_left_out():
    def make():
        model = _model("dense_3d", 4, 2)()
        layer = model.get_layer("lora")
        layer.bias.trainable = False
        layer.lora_kernel_a.trainable = False
        return model

    x = _inputs("dense_3d", 2)
    plan = _check(make, x, sample_weight=WEIGHTS)
    assert plan["lora"] == "rule:DenseLoraRule"


def test_grouped_conv_and_a_contracted_last_kernel_axis_take_the_fallback():
    def built(layer, input_shape):
        layer.build(input_shape)
        _enable(layer, 2)
        return layer

    # With groups A B mixes the groups' output channels; in 'abc,dc->abd' the kernel's last
    # letter is contracted, not an output feature: neither is the rules' form.
    assert rule_for(built(L.Conv2D(4, 3, groups=2), (None, 6, 6, 2))) is None
    assert rule_for(built(L.EinsumDense("abc,dc->abd", (5, 4)), (None, 5, 3))) is None
    assert type(rule_for(built(L.Conv2D(4, 3), (None, 6, 6, 2)))).__name__ == "ConvLoraRule"
    assert type(rule_for(built(L.EinsumDense("abc,cd->abd", (5, 4)), (None, 5, 3)))).__name__ \
        == "EinsumDenseLoraRule"


def _lora_backbone():
    """A small LoRA fine-tuning model: frozen embedding, attention and MLP, LoRA on the
    embedding, the query/value projections and the MLP, a trainable head."""
    tokens = keras.Input((6,), dtype="int32")
    embedding = L.Embedding(20, 8, name="embedding")
    h = embedding(tokens)
    attention = L.MultiHeadAttention(2, 4, name="attention")
    h = L.LayerNormalization(name="norm")(h + attention(h, h))
    up = L.Dense(16, activation="gelu", name="up")
    h = h + L.Dense(8, name="down")(up(h))
    outputs = L.Dense(3, name="head")(L.GlobalAveragePooling1D()(h))
    model = keras.Model(tokens, outputs)
    for layer in model.layers:
        if layer.name != "head":
            layer.trainable = False
    # pylint: disable-next=protected-access
    for layer in (embedding, attention._query_dense, attention._value_dense, up):
        layer.trainable = True
        _enable(layer, 2, alpha=4)
    return model


def test_make_private_plans_a_lora_model_on_rules_and_its_step_equals_the_loop():
    x, y = _tokens((6,), vocab=20), _labels()
    keras.utils.set_random_seed(3)
    model = _lora_backbone()
    plan = tfdp.training.gradient_plan(model, x)
    assert plan == {"embedding": "rule:EmbeddingLoraRule", "query": "rule:EinsumDenseLoraRule",
                    "value": "rule:EinsumDenseLoraRule", "up": "rule:DenseLoraRule",
                    "head": "rule:DenseRule"}
    trainable = [v.path for v in model.trainable_variables]
    assert len(trainable) == 2 * 4 + 3 + 2  # A and B x 4; biases of query, value, up; the head

    clip = 0.05  # binding for every example
    norms, sums = brute_force(model, loss_fn(), x, y, clip, "l2")
    assert np.all(norms > clip)
    before = [v.numpy() for v in model.trainable_variables]
    frozen_before = [v.numpy() for v in model.non_trainable_variables]
    private = tfdp.make_private(model)
    private.compile(optimizer=tfdp.DPKerasSGDOptimizer(learning_rate=1.0, l2_norm_clip=clip,
                                                       noise_multiplier=0.0), loss=loss_fn())
    private.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    for b, v, want in zip(before, model.trainable_variables, sums):
        np.testing.assert_allclose(b - v.numpy(), want / BATCH, rtol=1e-4, atol=1e-7,
                                   err_msg=v.path)
    for b, v in zip(frozen_before, model.non_trainable_variables):
        np.testing.assert_array_equal(b, v.numpy(), err_msg=v.path)
