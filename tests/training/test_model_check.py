"""The model check probes the forward pass: layers that write data into their variables or
mix examples are refused whatever their class; seed state, frozen normalization, per-example
layers and augmentations are accepted, and the probe leaves no trace."""

import numpy as np
import pytest
import keras
import tensorflow as tf

import tfdp

L = keras.layers
CLIP = 1.0


class RunningMean(L.Layer):
    """Not BatchNormalization: a running mean of the inputs kept in training, subtracted."""

    def build(self, input_shape):
        self.mean = self.add_weight(shape=input_shape[1:], initializer="zeros",
                                    trainable=False, name="running_mean")

    def call(self, x, training=False):
        if training:
            self.mean.assign(0.9 * self.mean + 0.1 * keras.ops.mean(x, axis=0))
        return x - self.mean


class SubclassedWith(keras.Model):
    """A subclassed model (no functional graph, so nothing to probe before the first batch)."""

    def __init__(self, middle, **kwargs):
        super().__init__(**kwargs)
        self.first = L.Dense(4)
        self.middle = middle
        self.head = L.Dense(3)

    def call(self, x, training=None):
        return self.head(self.middle(self.first(x), training=training))


def _xy(shape=(5,), n=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n,) + shape).astype("float32"), rng.integers(0, 3, n)


def _train(model, x, y, batch_size=4, num_microbatches=None, **options):
    """make_private, compile with noise 0 and fit one epoch; returns the private model."""
    private = tfdp.make_private(model, **options)
    private.compile(
        optimizer=tfdp.DPKerasSGDOptimizer(l2_norm_clip=CLIP, noise_multiplier=0.0,
                                           learning_rate=0.5, num_microbatches=num_microbatches),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None))
    private.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
    return private


def _dense(*middle, shape=(5,)):
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input(shape), L.Dense(4), *middle, L.Dense(3)])


# ----- refused -----


def test_a_custom_running_statistics_layer_is_refused_naming_it():
    model = _dense(RunningMean(name="my_stats"))
    with pytest.raises(ValueError, match=r"'my_stats' \(RunningMean\) writes its variable "
                                         r".*running_mean.*depends on the batch's inputs"):
        _train(model, *_xy())
    # Refused by the probe, before any training: the statistics were never written.
    np.testing.assert_array_equal(model.layers[1].mean.numpy(), np.zeros(4))


@pytest.mark.parametrize("rnn", [L.SimpleRNN, L.LSTM])
def test_a_stateful_rnn_is_refused(rnn):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input(batch_shape=(4, 6, 2)), rnn(3, stateful=True),
                              L.Dense(3)])
    # On the Jacobian path (microbatches) it used to train, its state keeping the last batch.
    with pytest.raises(ValueError, match="writes its variable .*rnn_state.*stateful=False"):
        _train(model, *_xy((6, 2)), num_microbatches=4)
    states = [np.abs(s.numpy()).sum() for s in tf.nest.flatten(model.layers[0].states)]
    assert states == [0.0] * len(states)  # the probe wrote nothing into the states


def test_a_lambda_subtracting_the_batch_mean_is_refused():
    model = _dense(L.Lambda(lambda t: t - keras.ops.mean(t, axis=0), name="center"))
    with pytest.raises(ValueError, match=r"mixes examples across the batch \(first seen at "
                                         r"layer 'center'"):
        _train(model, *_xy())


def test_a_mixup_augmentation_is_refused():
    def mixup(x):  # every example mixed with its neighbour in the batch
        return 0.7 * x + 0.3 * tf.roll(x, 1, axis=0)

    with pytest.raises(ValueError, match=r"augmentation \(`augment`\) mixes examples"):
        _train(_dense(), *_xy(), augment=mixup)
    with pytest.raises(ValueError, match=r"augmentation \(`augment`\) mixes examples"):
        _train(_dense(), *_xy(), augment=mixup, augmentation_multiplicity=2)


def test_a_subclassed_model_with_a_bad_layer_is_refused_at_its_first_step():
    model = SubclassedWith(RunningMean(name="hidden_stats"))
    x, y = _xy()
    model(x[:1])
    private = tfdp.make_private(model)  # nothing to probe yet: no declared input shape
    assert isinstance(private, tfdp.training.private_model.PrivateWrapper)
    with pytest.raises(ValueError, match="'hidden_stats' .* writes its variable"):
        _train(model, x, y)
    np.testing.assert_array_equal(model.middle.mean.numpy(), np.zeros(4))


def test_a_subclassed_model_that_mixes_examples_is_refused():
    model = SubclassedWith(L.Lambda(lambda t: t / keras.ops.sum(keras.ops.abs(t))))
    x, y = _xy()
    model(x[:1])
    with pytest.raises(ValueError, match="mixes examples across the batch"):
        _train(model, x, y)


def test_trainable_batch_normalization_keeps_its_advice():
    with pytest.raises(ValueError, match="'bn': BatchNormalization in training mode.*"
                                         "trainable = False.*fold_batch_norm.*GroupNormalization"):
        tfdp.make_private(_dense(L.BatchNormalization(name="bn")))


def test_batch_normalization_on_batch_statistics_alone_is_refused_as_mixing():
    """momentum=1 never moves the moving statistics (nothing written), but the batch's
    statistics normalize every example: the mixing probe refuses it, with the BN advice."""
    with pytest.raises(ValueError, match="'bn': BatchNormalization in training mode"):
        tfdp.make_private(_dense(L.BatchNormalization(momentum=1.0, name="bn")))


class InferenceBatchNorm(L.Layer):
    """A trainable BatchNormalization its owner always calls with training=False."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.bn = L.BatchNormalization(name="bn")

    def call(self, x, training=None):
        return self.bn(x, training=False)


def test_trainable_batch_normalization_in_inference_mode_is_accepted():
    """Its gamma and beta train (on the per-channel rule); its statistics stay as they were."""
    model = _dense(InferenceBatchNorm())
    bn = model.layers[1].bn
    update = _one_step_update(model, *_xy())
    assert 0.0 < update <= 0.5 * CLIP + 1e-6
    assert np.abs(bn.beta.numpy()).max() > 0  # trained from zeros
    np.testing.assert_array_equal(bn.moving_mean.numpy(), np.zeros(4))
    np.testing.assert_array_equal(bn.moving_variance.numpy(), np.ones(4))
    assert tfdp.training.gradient_plan(model, _xy()[0])["bn"] == "rule:BatchNormalizationRule"


def test_a_subclassed_model_with_training_mode_batch_normalization_is_refused_at_its_first_step():
    model = SubclassedWith(L.BatchNormalization(name="bn"))
    x, y = _xy()
    model(x[:1])
    with pytest.raises(ValueError, match="cannot be probed before its first batch.*"
                                         "fold_batch_norm"):
        tfdp.training.check_dp_compatible(model)  # cannot see the BN's mode yet: refused
    tfdp.make_private(model)  # leaves it to the first step's probe
    with pytest.raises(ValueError, match="'bn': BatchNormalization in training mode"):
        _train(model, x, y)
    np.testing.assert_array_equal(model.middle.moving_mean.numpy(), np.zeros(4))


def test_unreplayable_randomness_cannot_be_checked_and_is_refused_with_advice():
    def noisy(x):
        return x + tf.random.normal(tf.shape(x))  # no Keras seed generator: not replayable

    with pytest.raises(ValueError, match="cannot be checked.*keras.random.SeedGenerator"):
        _train(_dense(), *_xy(), augment=noisy)


# ----- accepted -----


def _one_step_update(model, x, y, **options):
    before = [w.numpy() for w in model.trainable_weights]
    _train(model, x, y, batch_size=len(y), **options)
    return float(sum(np.sum(np.square(b - w.numpy()))
                     for b, w in zip(before, model.trainable_weights)) ** 0.5)


@pytest.mark.parametrize("make", [
    lambda: _dense(L.Dropout(0.5)),
    lambda: _dense(L.BatchNormalization(trainable=False)),
    lambda: _dense(L.GaussianNoise(0.3), L.LayerNormalization()),
], ids=["dropout", "frozen_batchnorm", "noise_layernorm"])
def test_seed_state_and_frozen_normalization_are_accepted(make):
    model = make()
    x, y = _xy()
    update = _one_step_update(model, x, y)
    # One noiseless step of learning rate 0.5 on the mean of clipped gradients.
    assert 0.0 < update <= 0.5 * CLIP + 1e-6


def test_frozen_batch_normalization_is_untouched_by_training():
    bn = L.BatchNormalization(trainable=False)
    model = _dense(bn)
    stats = [w.numpy() for w in bn.non_trainable_weights]
    _one_step_update(model, *_xy())
    for before, w in zip(stats, bn.non_trainable_weights):
        np.testing.assert_array_equal(before, w.numpy())


def test_a_conv_model_with_random_flip_augmentation_is_accepted():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6, 6, 1)), L.Conv2D(3, 3, activation="relu"),
                              L.MaxPool2D(), L.Flatten(), L.Dense(3)])
    x, y = _xy((6, 6, 1))
    update = _one_step_update(model, x, y, augment=L.RandomFlip("horizontal", seed=1),
                              augmentation_multiplicity=2)
    assert 0.0 < update <= 0.5 * CLIP + 1e-6


def test_the_probe_leaves_no_trace():
    """Seed generators and every other variable hold the same values after the check."""
    dropout = L.Dropout(0.5, seed=3)
    model = _dense(dropout)
    before = [v.numpy().copy() for v in model.variables]
    tfdp.training.check_dp_compatible(model)
    for b, v in zip(before, model.variables):
        np.testing.assert_array_equal(b, v.numpy())
    seed_state = dropout.seed_generator.state.numpy()
    model(_xy()[0], training=True)  # a real training call does advance it
    assert not np.array_equal(seed_state, dropout.seed_generator.state.numpy())


def test_functional_models_are_probed_at_make_private():
    x = keras.Input((5,))
    h = L.Dense(4)(x)
    out = L.Dense(3)(RunningMean(name="stats")(h))
    with pytest.raises(ValueError, match="'stats'"):
        tfdp.make_private(keras.Model(x, out))

