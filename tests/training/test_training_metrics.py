"""The training loss and metrics fit logs are computed from the private batches without noise.

A step the random schedule drops (on_skip="drop") must release nothing, so it never
updates them; `make_private(model, training_metrics=False)` releases none at all (fit
then logs only validation metrics), and the option is saved with the model's config.
"""

import numpy as np
import pytest
import keras

import tfdp

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
BATCH, STEPS = 8, 4


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(BATCH * STEPS, 5)).astype("float32"), rng.integers(0, 3, BATCH * STEPS)


def _private(noise_probability=1.0, on_skip="drop", **options):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="tanh"),
                              keras.layers.Dense(3)])
    private = tfdp.make_private(model, **options)
    optimizer = tfdp.DPKerasSGDOptimizer(
        learning_rate=0.5, l2_norm_clip=1.0, noise_multiplier=1.0, noise_schedule="random",
        noise_probability=noise_probability, on_skip=on_skip, insecure_reproducible_seed=3)
    private.compile(optimizer=optimizer, loss=LOSS, metrics=["accuracy"])
    return private, optimizer


class _BatchLogs(keras.callbacks.Callback):
    """Keeps every training batch's logs."""

    def __init__(self):
        super().__init__()
        self.logs = []

    def on_train_batch_end(self, batch, logs=None):
        self.logs.append(dict(logs or {}))


def _accuracy_count(model):
    (accuracy,) = [m for m in model.metrics if m.name == "compile_metrics"][0].metrics
    return float(accuracy.count.numpy())


def test_a_dropped_step_leaves_the_loss_and_metrics_untouched():
    x, y = _data()
    model, optimizer = _private(noise_probability=1e-9)
    history = model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=False)
    assert int(optimizer.dropped_steps.numpy()) == STEPS
    assert int(optimizer.iterations.numpy()) == 0
    # Nothing entered the trackers: no example's loss or prediction was released.
    assert float(model._loss_tracker.count.numpy()) == 0.0
    assert _accuracy_count(model) == 0.0
    assert history.history["loss"] == [0.0] and history.history["accuracy"] == [0.0]


def test_only_the_applied_steps_enter_the_loss_and_metrics():
    x, y = _data()
    model, optimizer = _private(noise_probability=0.5)
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=False)
    applied, dropped = int(optimizer.iterations.numpy()), int(optimizer.dropped_steps.numpy())
    assert applied + dropped == STEPS and 0 < dropped < STEPS
    assert float(model._loss_tracker.count.numpy()) == BATCH * applied
    assert _accuracy_count(model) == BATCH * applied
    # The release schedule (on_skip="release") still logs every step.
    model, optimizer = _private(noise_probability=0.5, on_skip="release")
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=False)
    assert float(model._loss_tracker.count.numpy()) == BATCH * STEPS


def test_training_metrics_false_logs_only_validation_metrics():
    x, y = _data()
    model, optimizer = _private(training_metrics=False)
    batches = _BatchLogs()
    history = model.fit(x, y, batch_size=BATCH, epochs=2, verbose=0, shuffle=False,
                        validation_data=(x[:8], y[:8]), callbacks=[batches])
    assert set(history.history) == {"dp_steps", "val_loss", "val_accuracy"}
    assert history.history["dp_steps"] == [4.0, 8.0]  # the ledger's steps, no data
    assert all(set(logs) == {"dp_steps"} for logs in batches.logs) and len(batches.logs) == 8
    assert int(optimizer.iterations.numpy()) == 2 * STEPS
    # The validation figures are the model's on the validation data.
    loss, accuracy = model.evaluate(x[:8], y[:8], verbose=0)
    assert history.history["val_loss"][-1] == pytest.approx(loss, rel=1e-5)
    assert history.history["val_accuracy"][-1] == pytest.approx(accuracy)


def test_training_metrics_is_checked_and_saved_with_the_model(tmp_path):
    with pytest.raises(ValueError, match="training_metrics"):
        tfdp.training.StepOptions(training_metrics="no")
    model, _ = _private(training_metrics=False)
    assert model.step_options.training_metrics is False
    assert model.get_config()["training_metrics"] is False
    rebuilt = type(model).from_config(model.get_config())
    assert rebuilt.step_options.training_metrics is False
    path = str(tmp_path / "m.keras")
    model.save(path)
    assert keras.models.load_model(path).step_options.training_metrics is False
    default, _ = _private()
    assert default.step_options.training_metrics is True
    # make_private on an already private model can turn them off.
    assert tfdp.make_private(default, training_metrics=False).step_options.training_metrics \
        is False
