"""Trains with BackupAndRestore; with --kill_at=E,B it SIGKILLs itself at batch B of epoch E.

Run by test_resume.py. Prints one JSON line with the optimizer's ledger and epsilon.
"""

import json
import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import keras
import tensorflow as tf  # noqa: E402

import tfdp  # noqa: E402


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
    model = keras.Sequential([keras.layers.Dense(8, activation="tanh", input_shape=(6,)),
                                 keras.layers.Dense(3)])
    if fast:
        model = tfdp.make_private(model)
    model.compile(
        optimizer=tfdp.DPKerasAdamOptimizer(
            learning_rate=0.05, l2_norm_clip=1.0, noise_multiplier=1.0,
            noise_schedule="random", noise_probability=0.6, on_skip="drop", seed=11),
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction=None))
    privacy = tfdp.PrivacyCallback(96, delta=1e-5, batch_size=8)
    callbacks = [keras.callbacks.BackupAndRestore(backup_dir, save_freq=3), privacy]
    if kill:
        epoch, batch = (int(v) for v in kill[0].split("=")[1].split(","))
        callbacks.append(KillAt(epoch, batch))
    model.fit(x, y, batch_size=8, epochs=4, shuffle=False, verbose=0, callbacks=callbacks)
    optimizer = model.optimizer
    print("RESULT " + json.dumps({
        "iterations": int(optimizer.iterations.numpy()),
        "noisy_steps": int(optimizer.noisy_steps.numpy()),
        "dropped_steps": int(optimizer.dropped_steps.numpy()),
        "seed": optimizer.query_global_state().seed.numpy().tolist(),
        "epsilon": privacy.result.epsilon,
    }), flush=True)


if __name__ == "__main__":
    main()
