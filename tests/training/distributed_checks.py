"""Run in a subprocess by test_distributed.py: DP training on 2 logical CPU replicas.

Prints one JSON line of measurements. Logical devices must be configured before
TensorFlow initializes, which is why this is not a pytest module.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

import tfdp  # noqa: E402
from resume_checks import OptimizerPath  # noqa: E402  (tests/ is this script's sys.path[0])

LOSS = keras.losses.SparseCategoricalCrossentropy(
    from_logits=True, reduction=None)


def noise_std_of_one_global_step(strategy, units=400, width=100, sigma=3.0):
    """Std of the summed noise in one step whose gradients are all zero."""
    with strategy.scope():
        variable = tf.Variable(tf.zeros([width, width]))
        optimizer = tfdp.DPKerasSGDOptimizer(
            learning_rate=1.0, l2_norm_clip=2.0, noise_multiplier=sigma / 2.0)
    x = tf.zeros([units, width])
    data = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices(x).batch(units))

    @tf.function
    def step(batch):
        def replica_step(xb):
            optimizer.minimize(lambda: tf.reduce_sum(tf.matmul(xb, variable), axis=1), [variable])
        strategy.run(replica_step, args=(batch,))

    step(next(iter(data)))
    replicas = [v.numpy() for v in strategy.experimental_local_results(variable)]
    noise = -replicas[0].ravel().astype(np.float64) * units
    return {
        "std": float(noise.std()),
        "replicas_identical": all(np.array_equal(replicas[0], r) for r in replicas[1:]),
        "noisy_steps": int(optimizer.noisy_steps.numpy()),
    }


def _grouped_data(rng, groups=16, slots=3):
    """Fixed grouped batches of 4 groups (x [4, 3, 6], y, weights), as poisson_batches lays out."""
    sizes = rng.integers(1, slots + 1, size=groups)
    x = rng.normal(size=(groups, slots, 6)).astype("float32")
    y = rng.integers(0, 3, size=(groups, slots))
    w = np.zeros((groups, slots), "float32")
    for g, n in enumerate(sizes):
        x[g, n:], y[g, n:], w[g, :n] = 0.0, 0, slots / n
    return tf.data.Dataset.from_tensor_slices((x, y, w)).batch(4)


def _adamw():
    """A Keras optimizer instance with weight decay and a moving average, for the wrapper."""
    return keras.optimizers.AdamW(0.05, weight_decay=0.1, use_ema=True, ema_momentum=0.5)


def train(strategy, fast, dp, seed=0, epochs=2, grouped=False, inner=None):
    """Trains a small MLP on fixed global batches; returns weights and the ledger.

    `grouped`: the batches hold groups of up to 3 examples, each group clipped as one unit.
    `inner`: makes the Keras optimizer a `tfdp.DPOptimizer` wraps (default: DP SGD).
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = rng.integers(0, 3, size=64)
    with strategy.scope():
        keras.utils.set_random_seed(seed)
        model = keras.Sequential([
            keras.Input((6,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(3)])
        # The optimizer path: per-example losses to the optimizer's own minimize (Keras 3
        # optimizers see only averaged gradients, so a train_step must hand them over).
        trained = tfdp.make_private(model, grouped=grouped) if fast else OptimizerPath(model)
        if inner is None:
            optimizer = tfdp.DPKerasSGDOptimizer(learning_rate=0.5, **dp)
        else:
            optimizer = tfdp.DPOptimizer(inner(), **dp)
        trained.compile(optimizer=optimizer, loss=LOSS)
    data = (_grouped_data(rng) if grouped
            else tf.data.Dataset.from_tensor_slices((x, y)).batch(16))
    trained.fit(data, epochs=epochs, verbose=0)
    weights = [v.numpy().tolist() for v in model.trainable_variables]
    locals_identical = all(
        all(np.array_equal(parts[0].numpy(), p.numpy()) for p in parts[1:])
        for parts in (strategy.experimental_local_results(v) for v in model.trainable_variables)
    )
    return {
        "weights": weights,
        "replicas_identical": locals_identical,
        "iterations": int(optimizer.iterations.numpy()),
        "noisy_steps": int(optimizer.noisy_steps.numpy()),
        "dropped_steps": int(optimizer.dropped_steps.numpy()),
        "inner_iterations": int(optimizer.inner_optimizer.iterations.numpy()),
        "largest_batch_size": int(optimizer.largest_batch_size.numpy()),
        # The last epoch's training-loss tracker: how many examples' losses it took in.
        "loss_count": float(trained._loss_tracker.count.numpy()),
    }


def main():
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    single = tf.distribute.get_strategy()
    results = {"replicas": mirrored.num_replicas_in_sync,
               "noise": noise_std_of_one_global_step(mirrored)}
    noiseless = dict(l2_norm_clip=0.3, noise_multiplier=0.0)
    for fast in (False, True):
        key = "fast" if fast else "optimizer"
        results[key] = {"mirrored": train(mirrored, fast, noiseless),
                        "single": train(single, fast, noiseless)}
    results["grouped"] = {"mirrored": train(mirrored, True, noiseless, grouped=True),
                          "single": train(single, True, noiseless, grouped=True)}
    drop = dict(l2_norm_clip=0.3, noise_multiplier=1.0, noise_schedule="random",
                noise_probability=0.5, on_skip="drop", insecure_reproducible_seed=3)
    results["drop"] = {"mirrored": train(mirrored, True, drop, epochs=3),
                       "single": train(single, True, drop, epochs=3)}
    # Every step dropped: the training loss must take in nothing, on any number of replicas.
    drop_all = dict(drop, noise_probability=1e-9)
    results["drop_all"] = {"mirrored": train(mirrored, True, drop_all, epochs=1),
                           "single": train(single, True, drop_all, epochs=1)}
    # The wrapper around AdamW with weight decay and EMA: noiseless, and with dropped steps.
    results["adamw"] = {"mirrored": train(mirrored, True, noiseless, inner=_adamw),
                        "single": train(single, True, noiseless, inner=_adamw)}
    results["adamw_drop"] = {"mirrored": train(mirrored, True, drop, epochs=3, inner=_adamw),
                             "single": train(single, True, drop, epochs=3, inner=_adamw)}
    print("RESULT " + json.dumps(results))


if __name__ == "__main__":
    sys.exit(main())
