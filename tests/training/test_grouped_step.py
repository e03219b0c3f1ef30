"""Groups (e.g. patients) as the privacy unit in make_private's train step.

A group's clipped contribution must have norm at most the clip whatever its size; the step's
clipped sum must equal a brute-force loop over groups (gradient of each group's mean loss
over its real examples, clipped, summed) on the fast path, the Jacobian path and physical
batches; empty slots must add nothing; the ledger must count groups.
"""

import numpy as np
import pytest
import keras
import tensorflow as tf

import tfdp
from tfdp.run.methods import OptimizerPathModel

L = keras.layers
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
SIZES = (1, 3, 2, 4)  # real examples per group
SLOTS = 4
CLIP = 0.3


def _conv(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((5, 5, 1)), L.Conv2D(2, 3, activation="tanh"),
                             L.Flatten(), L.Dense(3)])


def _lstm(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((4, 2)), L.LSTM(3), L.Dense(3)])


def _attention(seed=0):
    keras.utils.set_random_seed(seed)
    tokens = keras.Input((4, 6))
    h = L.LayerNormalization()(tokens)
    h = h + L.MultiHeadAttention(num_heads=2, key_dim=3)(h, h)
    h = L.GroupNormalization(groups=2)(h)
    return keras.Model(tokens, L.Dense(3)(L.Flatten()(h)))


def _embedding(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((5,), dtype="int32"), L.Embedding(9, 4),
                             L.GlobalAveragePooling1D(), L.Dense(3)])


MODELS = {"conv": (_conv, (5, 5, 1)), "lstm": (_lstm, (4, 2)),
          "attention": (_attention, (4, 6)), "embedding": (_embedding, (5,))}


def _grouped_batch(shape, sizes=SIZES, slots=SLOTS, seed=0, pad_value=0.0):
    """x [G, S, ...], y [G, S], w [G, S] as tfdp.data.poisson_batches(groups=...) lays them out."""
    rng = np.random.default_rng(seed)
    x = np.full((len(sizes), slots, *shape), pad_value, np.float32)
    y = np.zeros((len(sizes), slots), np.int64)
    w = np.zeros((len(sizes), slots), np.float32)
    for g, n in enumerate(sizes):
        x[g, :n] = (rng.integers(0, 9, size=(n, *shape)) if shape == (5,)
                    else rng.normal(size=(n, *shape)) * 3)
        y[g, :n] = rng.integers(0, 3, size=n)
        w[g, :n] = slots / n
    return x, y, w


def _flat(arrays):
    # tf.convert_to_tensor densifies an embedding's IndexedSlices gradient.
    return np.concatenate([np.ravel(np.asarray(tf.convert_to_tensor(a))) for a in arrays])


def _brute_force_update(model, x, y, sizes, clip):
    """-(1/G) sum_g clip(grad of group g's mean loss over its real examples)."""
    total = 0.0
    for g, n in enumerate(sizes):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(LOSS(y[g, :n], model(x[g, :n], training=True)))
        grad = _flat(tape.gradient(loss, model.trainable_weights))
        total = total + grad * min(1.0, clip / np.linalg.norm(grad))
    return -total / len(sizes)


def _one_step(model, x, y, w):
    start = _flat([v.numpy() for v in model.trainable_weights])
    model.compile(optimizer=tfdp.DPKerasSGDOptimizer(l2_norm_clip=CLIP, noise_multiplier=0.0,
                                                     learning_rate=1.0), loss=LOSS)
    data = tf.data.Dataset.from_tensors((x, y, w))
    model.fit(data, epochs=1, verbose=0)
    return _flat([v.numpy() for v in model.trainable_weights]) - start


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("path", ["fast", "jacobian", "physical"])
def test_grouped_step_is_the_clipped_sum_over_groups(name, path):
    build, shape = MODELS[name]
    x, y, w = _grouped_batch(shape)
    reference = build()
    want = _brute_force_update(reference, x, y, SIZES, CLIP)
    per_example = -np.mean([_example_clipped(reference, x[g, i:i + 1], y[g, i:i + 1])
                            for g, n in enumerate(SIZES) for i in range(n)], axis=0)
    assert np.linalg.norm(want - per_example) > 1e-3  # group and example clipping differ
    model = tfdp.make_private(build(), grouped=True,
                              physical_batch_size=2 * SLOTS if path == "physical" else None)
    if path == "jacobian":
        model = OptimizerPathModel(model.input, model.output)
        model.set_step_options(grouped=True)
    update = _one_step(model, x, y, w)
    np.testing.assert_allclose(update, want, rtol=2e-4, atol=1e-6)
    assert int(model.optimizer.largest_batch_size.numpy()) == len(SIZES)  # groups, not rows


def _example_clipped(model, x, y):
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(LOSS(y, model(x, training=True)))
    grad = _flat(tape.gradient(loss, model.trainable_weights))
    return grad * min(1.0, CLIP / np.linalg.norm(grad))


@pytest.mark.parametrize("size", [1, 2, 4])
def test_a_group_moves_the_weights_by_at_most_the_clip_whatever_its_size(size):
    x, y, w = _grouped_batch((5, 5, 1), sizes=(size,), seed=size)
    x *= 20  # every example's gradient is far above the clip
    model = tfdp.make_private(_conv(), grouped=True)
    update = _one_step(model, x, y, w)
    assert 0.5 * CLIP < np.linalg.norm(update) <= CLIP * (1 + 1e-5)


def test_empty_slots_add_nothing():
    x, y, w = _grouped_batch((5, 5, 1))
    garbage, _, _ = _grouped_batch((5, 5, 1), pad_value=7.0)
    first = _one_step(tfdp.make_private(_conv(), grouped=True), x, y, w)
    second = _one_step(tfdp.make_private(_conv(), grouped=True), garbage, y, w)
    np.testing.assert_allclose(first, second, rtol=1e-5, atol=1e-7)


def test_grouped_model_refuses_flat_batches_and_flat_model_refuses_groups():
    x, y, w = _grouped_batch((5, 5, 1))
    with pytest.raises(ValueError, match="grouped batches"):
        _one_step(tfdp.make_private(_conv(), grouped=True), x[:, 0], y[:, 0], w[:, 0])
    with pytest.raises(ValueError, match="grouped=True"):
        _one_step(tfdp.make_private(_conv()), x, y, w)


def test_grouped_option_survives_save_and_load(tmp_path):
    model = tfdp.make_private(_conv(), grouped=True)
    model.compile(optimizer=tfdp.DPKerasSGDOptimizer(l2_norm_clip=1.0, noise_multiplier=1.0,
                                                     learning_rate=0.1), loss=LOSS)
    path = str(tmp_path / "grouped.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.step_options.grouped
    assert loaded.get_config()["grouped"] is True


def test_training_metrics_leave_the_empty_slots_out():
    x, y, w = _grouped_batch((5, 5, 1))
    model = tfdp.make_private(_conv(), grouped=True)
    model.compile(optimizer=tfdp.DPKerasSGDOptimizer(l2_norm_clip=CLIP, noise_multiplier=0.0,
                                                     learning_rate=0.0), loss=LOSS,
                  metrics=["accuracy"])
    before = model.predict(x.reshape(-1, 5, 5, 1), verbose=0).argmax(-1).reshape(y.shape)
    real = w > 0
    want = float(np.mean(before[real] == y[real]))
    logs = model.fit(tf.data.Dataset.from_tensors((x, y, w)), epochs=1, verbose=0).history
    assert logs["accuracy"][0] == pytest.approx(want)
