"""BatchNormalizationRule: a trainable BatchNormalization called in inference mode (moving
statistics) gets exact per-example gamma/beta gradients, against a brute-force loop."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from rule_check import check_against_brute_force

import tfdp
from tfdp.training.rules.batch_normalization import BatchNormalizationRule
from tfdp.training.rules.registry import rule_for

L = keras.layers
RULE = "rule:BatchNormalizationRule"
BATCH = 6


def _labels(batch=BATCH):
    return np.arange(batch) % 3


def _x(*shape):
    rng = np.random.default_rng(0)
    return (0.5 + 2.0 * rng.normal(size=(BATCH,) + shape)).astype("float32")


def _bn(**kwargs):
    """Pretrained-looking statistics and affine: none of them at their initial values."""
    kwargs.setdefault("gamma_initializer", keras.initializers.RandomUniform(0.5, 1.5))
    kwargs.setdefault("beta_initializer", "random_normal")
    kwargs.setdefault("moving_mean_initializer", "random_normal")
    kwargs.setdefault("moving_variance_initializer", keras.initializers.RandomUniform(0.5, 2.0))
    return L.BatchNormalization(name="bn", **kwargs)


class InferenceBN(keras.Model):
    """A subclassed model calling a trainable BatchNormalization with training=False,
    `calls` times (shared gamma/beta), between a Dense (or Conv2D) and the head."""

    def __init__(self, image=False, calls=1, **bn_kwargs):
        super().__init__()
        self.pre = L.Conv2D(4, 2, use_bias=False, name="pre") if image else L.Dense(
            4, use_bias=False, name="pre")
        self.bn = _bn(**bn_kwargs)
        self.calls = calls
        self.flat = L.Flatten()
        self.head = L.Dense(3, name="head")

    def call(self, x, training=None):
        h = self.pre(x)
        for _ in range(self.calls):
            h = keras.ops.tanh(self.bn(h, training=False))
        return self.head(self.flat(h))


def _make(x, **kwargs):
    def make():
        model = InferenceBN(**kwargs)
        model(x[:1])
        return model
    return make


CASES = {
    "vector": (dict(), (5,)),
    "image": (dict(image=True), (4, 4, 2)),
    "called_twice": (dict(calls=2), (5,)),
    "image_called_twice": (dict(image=True, calls=2), (4, 4, 2)),
    "no_scale": (dict(image=True, scale=False), (4, 4, 2)),
    "no_center": (dict(image=True, center=False), (4, 4, 2)),
    "epsilon": (dict(image=True, epsilon=0.5), (4, 4, 2)),
    "channel_axis_1": (dict(image=True, axis=1), (4, 4, 2)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_options(name):
    kwargs, shape = CASES[name]
    x = _x(*shape)
    plan = check_against_brute_force(_make(x, **kwargs), x, _labels())
    assert plan["bn"] == RULE


def test_fixed_clip_and_sample_weights():
    x = _x(4, 4, 2)
    plan = check_against_brute_force(_make(x, image=True), x, _labels(), clip=1e-3,
                                     sample_weight=np.array([1.0, 0.5, 2.0, 0.25, 1.5, 1.0]))
    assert plan["bn"] == RULE


def test_per_example_gradients_are_the_closed_form():
    """grad_gamma[b, c] = sum_t g * x_hat, grad_beta[b, c] = sum_t g, x_hat from the moving stats."""
    keras.utils.set_random_seed(0)
    layer = _bn()
    x = tf.constant(_x(3, 2))
    layer.build(x.shape)
    rule = BatchNormalizationRule()
    output, a, z = rule.forward(layer, x, training=False)
    np.testing.assert_array_equal(output.numpy(), layer(x, training=False).numpy())
    g = tf.constant(np.random.default_rng(1).normal(size=z.shape).astype("float32"))
    grads = rule.per_example_gradients(layer, [(a, g)])
    x_hat = (x.numpy() - layer.moving_mean.numpy()) / np.sqrt(
        layer.moving_variance.numpy() + layer.epsilon)
    np.testing.assert_allclose(grads[id(layer.gamma.value)].numpy(),
                               (g.numpy() * x_hat).sum(axis=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads[id(layer.beta.value)].numpy(), g.numpy().sum(axis=1),
                               rtol=1e-6)


def test_training_mode_calls_are_declined():
    layer = _bn()
    x = tf.constant(_x(5))
    layer.build(x.shape)
    assert BatchNormalizationRule().forward(layer, x, training=True) is None
    assert BatchNormalizationRule().forward(layer, x, True) is None  # positional
    assert BatchNormalizationRule().forward(layer, x, training=False) is not None


def test_a_private_step_trains_gamma_and_beta_and_leaves_the_statistics():
    x = _x(4, 4, 2)
    model = _make(x, image=True)()
    bn = model.bn
    stats = [bn.moving_mean.numpy(), bn.moving_variance.numpy()]
    gamma = bn.gamma.numpy()
    private = tfdp.make_private(model)
    private.compile(optimizer=tfdp.DPKerasSGDOptimizer(l2_norm_clip=1.0, noise_multiplier=0.0,
                                                       learning_rate=0.5),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                                    reduction=None))
    private.fit(x, _labels(), batch_size=BATCH, epochs=1, verbose=0)
    assert np.abs(bn.gamma.numpy() - gamma).max() > 1e-4
    np.testing.assert_array_equal(bn.moving_mean.numpy(), stats[0])
    np.testing.assert_array_equal(bn.moving_variance.numpy(), stats[1])


def test_subclass_overriding_call_has_no_rule():
    class Shifted(L.BatchNormalization):
        def call(self, inputs, training=None):
            return super().call(inputs, training=training) + 1.0

    assert rule_for(Shifted()) is None
