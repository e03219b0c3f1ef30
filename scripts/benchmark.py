"""Side-by-side speed and memory of DP vs non-private training on the model zoo, in one run.

For every model of `tfdp.models.zoo` (the TF Privacy tutorial CNN, the pneumonia CNN, a
GroupNorm ResNet, a transformer block, an LSTM, a text CNN, an MLP, and a MobileNetV3Small
backbone at 128x128 fine-tuned three ways: head only, last block, LoRA; the Opacus peer,
`peers/opacus_zoo.py` run by `make peers`, trains the same nets in PyTorch), plain
Keras training ("nodp") and tfdp's fast path ("tfdp_fast": `tfdp.make_private` and
`tfdp.DPKerasSGDOptimizer`) train on the same synthetic data and batch, each in its own
subprocess so its peak memory (max RSS) is its own. Each reports its best epoch after a
warm-up epoch; the two run first and again last (in reverse order) and keep their faster
run, so a burst of load on a shared machine favours neither. One row per model: seconds
per epoch, the DP/no-DP ratio, peak memory and its ratio, and how many layers took a
per-layer rule, the local fallback or the Jacobian (`tfdp.training.gradient_plan`).
The logic is in `tfdp.training.benchmark`.

TF Privacy's Keras DP optimizers (generic, vectorized) and its DPSequential model are
built on Keras 2 (`keras.optimizers.legacy`, tf-keras's train-step internals), which
Keras 3 does not have: they are listed as unavailable on Keras 3, not run. The DP
optimizer's own Jacobian path (`--configs=nodp,tfdp_fast,tfdp_optimizer`) is timed over a
few steps and scaled to an epoch.

    .venv/bin/python scripts/benchmark.py                                  # the whole zoo
    .venv/bin/python scripts/benchmark.py --models=tutorial_cnn,resnet
    .venv/bin/python scripts/benchmark.py --quick --models=mlp --batch_size=8   # a smoke test

Writes `--output` (results/benchmark.json) and ends by printing `tfdp_vs_nodp_ratio=<number>`
for the tutorial CNN when it ran. Like the other scripts it turns oneDNN on unless
TF_ENABLE_ONEDNN_OPTS is set (the subprocesses inherit the setting).
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys

if __package__:  # tfdp.scripts.<name>: an installed console script, or python -m
    from tfdp.scripts import _cli
else:  # python scripts/<name>.py: Python puts scripts/ first on sys.path
    import _cli  # noqa: E402

_cli.quiet_tensorflow_startup()

from absl import app, flags  # noqa: E402

from tfdp.models import zoo  # noqa: E402
from tfdp.training import benchmark as bench  # noqa: E402

FLAGS = flags.FLAGS
ALIASES = {"cnn": "tutorial_cnn"}  # the name before the zoo
TUTORIAL = "tutorial_cnn"
_SIGNALS = {int(s) for s in signal.Signals}
# TensorFlow's native log lines and the module list of Python's fault handler after a crash.
_NOISE = ("I0000", "W0000", "WARNING: All log", "Extension modules:")
_WORKER_FLAGS = ("num_examples", "batch_size", "epochs", "warmup_epochs", "slow_steps")


def _settings() -> dict:
    """The measuring settings after --quick (explicit flags win over it)."""
    settings = {name: FLAGS[name].value for name in _WORKER_FLAGS + ("rounds",)}
    if FLAGS.quick:
        if not FLAGS["epochs"].present:
            settings["epochs"] = 1
        if not FLAGS["rounds"].present:
            settings["rounds"] = 1
        if not FLAGS["slow_steps"].present:
            settings["slow_steps"] = 1
    return settings


def _measure(model_name: str, config: str, settings: dict) -> dict:
    """Runs `tfdp.training.benchmark.measure` for one configuration in a fresh subprocess."""
    command = [sys.executable, os.path.abspath(__file__), f"--worker={model_name}:{config}"]
    command += [f"--{name}={settings[name]}" for name in _WORKER_FLAGS
                if settings[name] is not None]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    lines = [line.strip() for line in (done.stderr or done.stdout).strip().splitlines()
             if line.strip() and not line.startswith(_NOISE)]
    error = lines[-1][:300] if lines else ""
    if done.returncode < 0:  # killed by a signal: a crash in native code
        name = signal.Signals(-done.returncode).name if -done.returncode in _SIGNALS else "?"
        # Python's fault handler (absl turns it on) lists the innermost frame first.
        frames = [line for line in lines if line.startswith('File "')]
        error = f"worker killed by signal {-done.returncode} ({name})" + (
            f", in {frames[0][:300]}" if frames else (f"; last line: {error}" if error else ""))
    return {"error": error or f"worker exit status {done.returncode}"}


def _keep_best(previous: dict, result: dict) -> dict:
    """Of two runs of one configuration: the faster time, the higher peak memory."""
    if "seconds_per_epoch" not in previous:
        return result
    if "seconds_per_epoch" not in result:
        return previous
    best = dict(result if result["seconds_per_epoch"] < previous["seconds_per_epoch"] else previous)
    best["peak_rss_mb"] = max(result["peak_rss_mb"], previous["peak_rss_mb"])
    best["runs_seconds_per_epoch"] = (previous.get("runs_seconds_per_epoch",
                                                   [previous["seconds_per_epoch"]])
                                      + [result["seconds_per_epoch"]])
    return best


def _order(configs, rounds: int):
    """Baseline and fast path in every round (alternating which goes first); the rest once."""
    repeated = [c for c in (bench.BASELINE, bench.FAST) if c in configs]
    others = [c for c in configs if c not in repeated]
    order = []
    for round_index in range(max(1, rounds)):
        order += repeated if round_index % 2 == 0 else repeated[::-1]
        if round_index == 0:
            order += others
    return order


def _benchmark_model(model_name: str, configs, settings: dict) -> dict:
    built = zoo.build_zoo_model(model_name)
    batch_size = settings["batch_size"] or built.batch_size
    if FLAGS.quick and not settings["num_examples"]:  # two batches
        settings = dict(settings, num_examples=2 * batch_size)
    results: dict = {}
    for config in _order(configs, settings["rounds"]):
        print(f"  {model_name} {config} ...", file=sys.stderr, flush=True)
        result = _measure(model_name, config, settings)
        results[config] = _keep_best(results.get(config, {}), result)
    measured = next((r for r in results.values() if "batch_size" in r), {})
    entry = {
        "batch_size": measured.get("batch_size", batch_size),
        "num_examples": measured.get("num_examples", settings["num_examples"]
                                     or built.data.num_examples),
        "input_shape": list(built.data.input_shape),
        "vocab_size": built.data.vocab_size,
        "parameters": int(built.model.count_params()),
        "results": results,
        "ratios": bench.compare(results),
    }
    fast = results.get(bench.FAST, {})
    if "plan" in fast:
        entry["plan"] = fast["plan"]
        entry["plan_counts"] = fast.get("plan_counts")
    return entry


def _model_names():
    names = [ALIASES.get(name, name) for name in FLAGS.models]
    unknown = [name for name in names if name not in zoo.ALL_NAMES]
    if unknown:
        raise app.UsageError(f"--models: unknown {unknown}; choose from "
                             f"{', '.join(zoo.ALL_NAMES)}.")
    return names


def main(argv):
    del argv
    if FLAGS.worker:
        model_name, config = FLAGS.worker.split(":")
        result = bench.measure(model_name, config, num_examples=FLAGS.num_examples,
                               batch_size=FLAGS.batch_size, epochs=FLAGS.epochs,
                               warmup_epochs=FLAGS.warmup_epochs, slow_steps=FLAGS.slow_steps)
        print("RESULT " + json.dumps(result), flush=True)
        return
    known = bench.CONFIGS + tuple(bench.UNAVAILABLE)
    unknown = [c for c in FLAGS.configs if c not in known]
    if unknown or bench.BASELINE not in FLAGS.configs:
        raise app.UsageError(f"--configs: unknown {unknown}; choose from {', '.join(known)}, "
                             f"with {bench.BASELINE} (the baseline).")
    names = _model_names()
    settings = _settings()
    runnable = [c for c in FLAGS.configs if c in bench.CONFIGS]
    import keras  # noqa: E402  pylint: disable=import-outside-toplevel
    import tensorflow as tf  # noqa: E402  pylint: disable=import-outside-toplevel

    report = {
        "settings": dict(settings, quick=FLAGS.quick, configs=runnable,
                         dp=dict(bench.DP_SETTINGS), learning_rate=bench.LEARNING_RATE,
                         tf_enable_onednn_opts=os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
                         tensorflow=tf.__version__, keras=keras.__version__,
                         python=platform.python_version(), cpu_count=os.cpu_count()),
        "unavailable": {c: f"not run on Keras 3: {bench.UNAVAILABLE[c]}"
                        for c in FLAGS.configs if c in bench.UNAVAILABLE},
        "models": {},
    }
    for name in names:
        report["models"][name] = _benchmark_model(name, runnable, settings)
    print()
    for line in bench.format_table(report):
        print(line)
    os.makedirs(os.path.dirname(FLAGS.output) or ".", exist_ok=True)
    with open(FLAGS.output, "w") as handle:
        json.dump(report, handle, indent=2)
    print(f"\nwrote {FLAGS.output}")
    tutorial = report["models"].get(TUTORIAL, {}).get("ratios", {}).get(bench.FAST, {})
    if "time_ratio" in tutorial:
        print(f"tfdp_vs_nodp_ratio={tutorial['time_ratio']:.3f}")


def define_flags() -> None:
    """Defines this script's absl flags."""
    flags.DEFINE_list("models", list(zoo.ALL_NAMES),
                      f"Zoo models to benchmark ({', '.join(zoo.ALL_NAMES)}; 'cnn' means "
                      "tutorial_cnn; the mobilenet_* rows fine-tune a keras.applications "
                      "backbone). Default: all.")
    flags.DEFINE_list(
        "configs", [bench.BASELINE, bench.FAST, bench.FAST_GRID] + list(bench.UNAVAILABLE),
        "Training options to compare: nodp (the baseline, required), tfdp_fast, tfdp_fast_grid "
        "(the fast path with floating-point-safe grid noise), tfdp_optimizer "
        "(the DP optimizer's Jacobian; slow), tfp_* (TF Privacy's, unavailable on Keras 3).",
    )
    flags.DEFINE_integer("num_examples", None,
                         "Training examples (synthetic); default: the zoo model's (as the Opacus "
                         "peer's), or two batches with --quick.")
    flags.DEFINE_integer("batch_size", None, "Batch size; default: the zoo model's.")
    flags.DEFINE_integer("epochs", 3, "Timed epochs per run (the best is kept), after the warm-up.")
    flags.DEFINE_integer("warmup_epochs", 1, "Untimed epochs first (tracing, allocations).")
    flags.DEFINE_integer("rounds", 2, "Runs of nodp and tfdp_fast per model (the faster is kept).")
    flags.DEFINE_integer("slow_steps", 2, "Timed steps for the slow options (scaled to an epoch).")
    flags.DEFINE_boolean("quick", False,
                         "Smoke test: two batches per model, one timed epoch, one round "
                         "(explicit flags still win).")
    flags.DEFINE_string("output", "results/benchmark.json", "Where the JSON report goes.")
    flags.DEFINE_string("worker", None, "Internal: run one configuration as MODEL:CONFIG.")


def cli() -> None:
    """Entry point of `python scripts/<name>.py` and of the `tfdp-benchmark` console script."""
    define_flags()
    app.run(main, argv=_cli.argv_with_helpful())


if __name__ == "__main__":
    cli()
