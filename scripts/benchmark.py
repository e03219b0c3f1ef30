"""Side-by-side speed and memory of DP training options in one run (ratios, not absolute seconds).

Each configuration trains in its own subprocess on the same synthetic data, so its
peak memory (max RSS) is its own; non-private Keras training is measured before and
after the others and its faster run is the baseline. Slow options (the DP optimizer's
own Jacobian path) are timed over a few steps and scaled to an epoch.

TF Privacy's Keras DP optimizers (generic, vectorized) and its DPSequential model are
built on Keras 2 (`keras.optimizers.legacy`, tf-keras's train-step internals), which
Keras 3 does not have: they are listed as unavailable on Keras 3, not run.

    .venv/bin/python scripts/benchmark.py            # tutorial CNN and MLP
    .venv/bin/python scripts/benchmark.py --models=cnn --output=results/benchmark.json

Ends by printing `tfdp_vs_nodp_ratio=<number>` for the CNN.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

if __package__:  # tfdp.scripts.<name>: an installed console script, or python -m
    from tfdp.scripts import _cli
else:  # python scripts/<name>.py: Python puts scripts/ first on sys.path
    import _cli  # noqa: E402

from absl import app, flags

FLAGS = flags.FLAGS
SLOW = {"tfdp_optimizer"}
RUNNABLE = ("nodp", "tfdp_fast", "tfdp_optimizer")
# TF Privacy 0.8.12's Keras classes subclass Keras 2 ones that Keras 3 (TF >= 2.16) removed.
UNAVAILABLE = {
    "tfp_vectorized": "TF Privacy's VectorizedDPKerasSGDOptimizer subclasses "
                      "keras.optimizers.legacy.SGD (Keras 2), which Keras 3 does not have",
    "tfp_generic": "TF Privacy's DPKerasSGDOptimizer subclasses keras.optimizers.legacy.SGD "
                   "(Keras 2), which Keras 3 does not have",
    "tfp_dpsequential": "TF Privacy's DPSequential train_step reads Keras 2 internals (the "
                        "compiled loss container) and fails on Keras 3",
}


def _build(model_name):
    import keras

    layers = keras.layers
    if model_name == "cnn":
        return keras.Sequential([
            keras.Input((28, 28, 1)),
            layers.Conv2D(16, 8, strides=2, padding="same", activation="relu"),
            layers.MaxPool2D(2, 1),
            layers.Conv2D(32, 4, strides=2, padding="valid", activation="relu"),
            layers.MaxPool2D(2, 1),
            layers.Flatten(),
            layers.Dense(32, activation="relu"),
            layers.Dense(10),
        ]), (28, 28, 1)
    return keras.Sequential([
        keras.Input((784,)),
        layers.Dense(512, activation="relu"),
        layers.Dense(256, activation="relu"),
        layers.Dense(10),
    ]), (784,)


def _run_worker(spec: str) -> dict:
    """Trains one configuration and returns seconds per epoch."""
    import numpy as np
    import keras
    import tensorflow as tf

    import tfdp
    from tfdp.run import OptimizerPathModel

    model_name, config = spec.split(":")
    keras.utils.set_random_seed(0)
    model, shape = _build(model_name)
    n, batch = FLAGS.num_examples, FLAGS.batch_size
    x = np.random.default_rng(0).random((n,) + shape, dtype=np.float32)
    y = np.random.default_rng(1).integers(0, 10, n)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).cache()
    per_example = keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction=None)
    dp = dict(l2_norm_clip=1.0, noise_multiplier=1.1)
    if config == "nodp":
        model.compile(optimizer=keras.optimizers.SGD(0.1),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    elif config == "tfdp_fast":
        model = tfdp.make_private(model)
        model.compile(optimizer=tfdp.DPKerasSGDOptimizer(learning_rate=0.1, **dp), loss=per_example)
    elif config == "tfdp_optimizer":
        # make_private's train step with the optimizer's own Jacobian (train.py --nofast_path).
        private = tfdp.make_private(model)
        model = OptimizerPathModel(private.input, private.output)
        model.compile(optimizer=tfdp.DPKerasSGDOptimizer(learning_rate=0.1, **dp), loss=per_example)
    else:
        raise ValueError(f"unknown config {config!r}")
    steps_per_epoch = -(-n // batch)
    if config in SLOW:
        timed = data.take(FLAGS.slow_steps)
        model.fit(data.take(1), epochs=1, verbose=0)  # trace and warm up
        start = time.perf_counter()
        model.fit(timed, epochs=1, verbose=0)
        seconds = (time.perf_counter() - start) / FLAGS.slow_steps * steps_per_epoch
    else:
        model.fit(data, epochs=1, verbose=0)
        start = time.perf_counter()
        model.fit(data, epochs=FLAGS.epochs, verbose=0)
        seconds = (time.perf_counter() - start) / FLAGS.epochs
    return {"seconds_per_epoch": seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _measure(model_name: str, config: str) -> dict:
    command = [sys.executable, os.path.abspath(__file__), f"--worker={model_name}:{config}"] + [
        f"--{name}={FLAGS[name].value}" for name in
        ("num_examples", "batch_size", "epochs", "slow_steps")
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    return {"error": (done.stderr or done.stdout).strip().splitlines()[-1:]}


def main(argv):
    del argv
    if FLAGS.worker:
        print("RESULT " + json.dumps(_run_worker(FLAGS.worker)), flush=True)
        return
    unknown = [c for c in FLAGS.configs if c not in RUNNABLE and c not in UNAVAILABLE]
    if unknown or "nodp" not in FLAGS.configs:
        raise app.UsageError(f"--configs: unknown {unknown}; choose from "
                             f"{', '.join(RUNNABLE + tuple(UNAVAILABLE))}, with nodp (the baseline).")
    report = {"settings": {k: FLAGS[k].value for k in
                           ("num_examples", "batch_size", "epochs", "slow_steps")}, "models": {}}
    for model_name in FLAGS.models:
        rows = {}
        # The baseline and the fast path run first and again last, interleaved; each keeps its
        # faster run, so a burst of load on this shared machine does not favour either.
        repeated = ["nodp"] + (["tfdp_fast"] if "tfdp_fast" in FLAGS.configs else [])
        others = [c for c in FLAGS.configs if c not in repeated]
        for config in repeated + others + repeated:
            if config in UNAVAILABLE:
                rows[config] = {"unavailable": f"not run on Keras 3: {UNAVAILABLE[config]}"}
                continue
            result = _measure(model_name, config)
            previous = rows.get(config, {})
            if "seconds_per_epoch" in previous and "seconds_per_epoch" in result:
                result["seconds_per_epoch"] = min(result["seconds_per_epoch"],
                                                  previous["seconds_per_epoch"])
            rows[config] = result
        base = rows["nodp"]["seconds_per_epoch"]
        print(f"\n{model_name}: batch {FLAGS.batch_size}, {FLAGS.num_examples} examples")
        print(f"{'option':<18}{'s/epoch':>10}{'vs no-DP':>10}{'peak MB':>10}")
        for config, result in rows.items():
            if "seconds_per_epoch" in result:
                result["ratio_vs_nodp"] = result["seconds_per_epoch"] / base
                print(f"{config:<18}{result['seconds_per_epoch']:>10.3f}"
                      f"{result['ratio_vs_nodp']:>10.2f}{result['peak_rss_mb']:>10.0f}")
            elif "unavailable" in result:
                print(f"{config:<18}  unavailable ({result['unavailable']})")
            else:
                print(f"{config:<18}  failed: {result['error']}")
        report["models"][model_name] = rows
    os.makedirs(os.path.dirname(FLAGS.output) or ".", exist_ok=True)
    with open(FLAGS.output, "w") as handle:
        json.dump(report, handle, indent=2)
    print(f"\nwrote {FLAGS.output}")
    cnn = report["models"].get("cnn", {}).get("tfdp_fast", {})
    if "ratio_vs_nodp" in cnn:
        print(f"tfdp_vs_nodp_ratio={cnn['ratio_vs_nodp']:.3f}")


def define_flags() -> None:
    """Defines this script's absl flags."""
    flags.DEFINE_list("models", ["cnn", "mlp"], "Models to benchmark: cnn (TF Privacy tutorial), mlp.")
    flags.DEFINE_list(
        "configs",
        ["nodp", "tfdp_fast", "tfp_vectorized", "tfp_generic", "tfp_dpsequential", "tfdp_optimizer"],
        "Training options to compare (tfp_* are TF Privacy's, unavailable on Keras 3).",
    )
    flags.DEFINE_integer("num_examples", 2048, "Training examples (synthetic).")
    flags.DEFINE_integer("batch_size", 256, "Batch size.")
    flags.DEFINE_integer("epochs", 2, "Timed epochs for the fast options.")
    flags.DEFINE_integer("slow_steps", 2, "Timed steps for the slow options (scaled to an epoch).")
    flags.DEFINE_string("output", "results/benchmark.json", "Where the JSON report goes.")
    flags.DEFINE_string("worker", None, "Internal: run one configuration as MODEL:CONFIG.")


def cli() -> None:
    """Entry point of `python scripts/<name>.py` and of the `tfdp-benchmark` console script."""
    define_flags()
    app.run(main, argv=_cli.argv_with_helpful())


if __name__ == "__main__":
    cli()
