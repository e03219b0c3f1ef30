"""Trains with BackupAndRestore; with --kill_at=E,B it SIGKILLs itself at batch B of epoch E.

Run by test_resume.py. Prints one JSON line with the optimizer's ledger and epsilon.
`OptimizerPath` (also used by distributed_checks.py) is Keras 3's form of the DP
optimizer's own path: a model whose train_step hands the per-example losses to
`optimizer.minimize`, which takes per-example gradients with a Jacobian.
"""

import json
import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfdp  # noqa: E402


class OptimizerPath(keras.Model):
    """Trains `model` through the DP optimizer's own `minimize` (no layer rules, no make_private).

    A Keras 3 optimizer only sees averaged gradients, so the per-example losses reach it
    through this train_step, the custom-loop use the optimizer documents.
    """

    def __init__(self, model, **kwargs):
        super().__init__(**kwargs)
        self.wrapped = model

    def call(self, inputs, training=None):
        return self.wrapped(inputs, training=training)

    def train_step(self, data):
        x, y = data[:2]
        with tf.GradientTape() as tape:
            losses = self.loss(y, self(x, training=True))
        self.optimizer.minimize(losses, self.trainable_variables, tape=tape)
        return {"loss": tf.reduce_mean(losses)}


class KillAt(keras.callbacks.Callback):
    """Kills the process without any clean-up, as an out-of-memory killer or a preemption does."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.epoch, self.batch, self.current = epoch, batch, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.current == self.epoch and batch == self.batch:
            os.kill(os.getpid(), signal.SIGKILL)


def main():
    backup_dir, fast = sys.argv[1], "--fast" in sys.argv
    kill = [a for a in sys.argv if a.startswith("--kill_at=")]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 6)).astype("float32")
    y = rng.integers(0, 3, size=96)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="tanh"),
                              keras.layers.Dense(3)])
    if fast:
        model = tfdp.make_private(model)
    else:
        model = OptimizerPath(model)
        model(x[:1])  # built, as BackupAndRestore requires
    model.compile(
        optimizer=tfdp.DPKerasAdamOptimizer(
            learning_rate=0.05, l2_norm_clip=1.0, noise_multiplier=1.0,
            noise_schedule="random", noise_probability=0.6, on_skip="drop", insecure_reproducible_seed=11,
            expected_batch_size=8),  # Poisson accounting needs a data-independent divisor
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction=None))
    # model.fit's fixed-size batches: the shuffled-batch (replace-one) figure.
    privacy = tfdp.PrivacyCallback(96, delta=1e-5, batch_size=8, sampling="shuffle")
    # Keras 3's BackupAndRestore restores the epoch but not the position inside it: a backup
    # taken mid-epoch would resume at the epoch's first batch with the later ledger. Backups
    # at epoch ends are the exact resume point; the kill still comes mid-epoch, and the steps
    # after the last backup are lost and recomputed.
    callbacks = [keras.callbacks.BackupAndRestore(backup_dir, save_freq="epoch"), privacy]
    if kill:
        epoch, batch = (int(v) for v in kill[0].split("=")[1].split(","))
        callbacks.append(KillAt(epoch, batch))
    model.fit(x, y, batch_size=8, epochs=4, shuffle=False, verbose=0, callbacks=callbacks)
    optimizer = model.optimizer
    print("RESULT " + json.dumps({
        "iterations": int(optimizer.iterations.numpy()),
        "noisy_steps": int(optimizer.noisy_steps.numpy()),
        "dropped_steps": int(optimizer.dropped_steps.numpy()),
        "epsilon": privacy.result.epsilon,
    }), flush=True)


if __name__ == "__main__":
    main()
