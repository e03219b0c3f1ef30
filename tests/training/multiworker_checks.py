"""One worker of a 2-worker MultiWorkerMirroredStrategy DP run (TF_CONFIG on loopback).

Started twice by test_distributed.py (or once with --single); the chief prints one
JSON line with its ledger and epsilon.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfdp  # noqa: E402


def train(strategy, model, data, epochs, callback):
    """model.train_step under strategy.run, epoch by epoch, with the callback's epoch hooks.

    Keras 3's `fit` cannot start under MultiWorkerMirroredStrategy: before the first step it
    reduces a batch of the (x, y) structure across workers, which the collective ops refuse
    (keras-team/keras#20585). This loop is the custom-training form of the same steps.
    """
    with strategy.scope():
        # Slots exist before the step function: variables cannot be created in a replica step.
        model.optimizer.build(model.trainable_variables)
    batches = strategy.experimental_distribute_dataset(data)

    @tf.function
    def step(batch):
        strategy.run(model.train_step, args=(batch,))

    callback.set_model(model)
    callback.on_train_begin()
    for epoch in range(epochs):
        callback.on_epoch_begin(epoch)
        for batch in batches:
            step(batch)
        callback.on_epoch_end(epoch, {})


def main():
    single = "--single" in sys.argv
    strategy = (tf.distribute.get_strategy() if single
                else tf.distribute.MultiWorkerMirroredStrategy())
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = rng.integers(0, 3, size=64)
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = tfdp.make_private(keras.Sequential([
            keras.Input((6,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(3)]))
        model.compile(
            optimizer=tfdp.DPKerasSGDOptimizer(
                learning_rate=0.5, l2_norm_clip=1.0, noise_multiplier=1.2,
                noise_schedule="random", noise_probability=0.7, on_skip="drop", insecure_reproducible_seed=5,
                expected_batch_size=16),  # Poisson accounting needs a data-independent divisor
            loss=keras.losses.SparseCategoricalCrossentropy(
                from_logits=True, reduction=None))
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16).with_options(options)
    callback = tfdp.PrivacyCallback(64, delta=1e-5)
    train(strategy, model, data, epochs=3, callback=callback)
    optimizer = model.optimizer
    task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
    if single or task.get("index", 0) == 0:
        print("RESULT " + json.dumps({
            "replicas": strategy.num_replicas_in_sync,
            "epsilon": callback.result.epsilon,
            "iterations": int(optimizer.iterations.numpy()),
            "noisy_steps": int(optimizer.noisy_steps.numpy()),
            "dropped_steps": int(optimizer.dropped_steps.numpy()),
            "largest_batch_size": int(optimizer.largest_batch_size.numpy()),
        }), flush=True)


if __name__ == "__main__":
    main()
