"""Measuring DP against non-private training on the model zoo (what scripts/benchmark.py runs).

    measure(model_name, config, ...) -> dict      one configuration, in this process
    compare(results) -> dict                      DP / non-private ratios of one model
    format_table(report) -> list of lines         one row per model

`scripts/benchmark.py` runs every `measure` in its own subprocess, so each peak memory is
its own, and writes the report as JSON. The configurations:

- "nodp": plain Keras `fit` with `keras.optimizers.SGD`, the mean loss;
- "tfdp_fast": `tfdp.make_private(model)` with `tfdp.DPKerasSGDOptimizer(l2_norm_clip=1.0,
  noise_multiplier=1.0)` and the per-example loss (`reduction=None`): the fast path;
- "tfdp_fast_grid": the fast path with `floating_point_safe_noise=True` (the noise on a grid,
  `tfdp.randomness.grid`): what the floating-point-safe samplers cost;
- "tfdp_optimizer": the same train step with the DP optimizer's own Jacobian for the clipped
  sum (train.py `--nofast_path`); slow, so timed over a few steps and scaled to an epoch.

TF Privacy's Keras optimizers and DPSequential are Keras 2 code (`UNAVAILABLE` says why):
listed, not run. Data, batch, learning rate and seed are the same for every configuration.
"""

from __future__ import annotations

import resource
import time
from typing import Any, Dict, List, Optional

import keras
import tensorflow as tf

from tfdp.models import zoo

BASELINE, FAST, OPTIMIZER_PATH = "nodp", "tfdp_fast", "tfdp_optimizer"
FAST_GRID = "tfdp_fast_grid"
CONFIGS = (BASELINE, FAST, FAST_GRID, OPTIMIZER_PATH)
SLOW_CONFIGS = (OPTIMIZER_PATH,)
# TF Privacy 0.8.12's Keras classes subclass Keras 2 ones that Keras 3 (TF >= 2.16) removed.
UNAVAILABLE = {
    "tfp_vectorized": "TF Privacy's VectorizedDPKerasSGDOptimizer subclasses "
                      "keras.optimizers.legacy.SGD (Keras 2), which Keras 3 does not have",
    "tfp_generic": "TF Privacy's DPKerasSGDOptimizer subclasses keras.optimizers.legacy.SGD "
                   "(Keras 2), which Keras 3 does not have",
    "tfp_dpsequential": "TF Privacy's DPSequential train_step reads Keras 2 internals (the "
                        "compiled loss container) and fails on Keras 3",
}
DP_SETTINGS = {"l2_norm_clip": 1.0, "noise_multiplier": 1.0}
LEARNING_RATE = 0.01
PLAN_UNAVAILABLE = "plan unavailable"


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def compile_for(config: str, model: keras.Model) -> keras.Model:
    """`model` compiled for `config` (for the DP ones, wrapped by `tfdp.make_private` first)."""
    import tfdp  # pylint: disable=import-outside-toplevel  (tfdp imports this module's package)

    if config == BASELINE:
        model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model
    if config not in CONFIGS:
        raise ValueError(f"Unknown configuration {config!r}. Choose one of: {', '.join(CONFIGS)}.")
    private = tfdp.make_private(model)
    if config == OPTIMIZER_PATH:
        from tfdp.run.methods import OptimizerPathModel  # pylint: disable=import-outside-toplevel

        private = OptimizerPathModel(private.input, private.output, name=private.name)
    private.compile(
        optimizer=tfdp.DPKerasSGDOptimizer(learning_rate=LEARNING_RATE,
                                           floating_point_safe_noise=config == FAST_GRID,
                                           **DP_SETTINGS),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None))
    return private


class _EpochTimes(keras.callbacks.Callback):
    """Wall-clock seconds of every epoch of one `fit` (no set-up or tear-down of fit itself)."""

    def __init__(self):
        super().__init__()
        self.seconds: List[float] = []
        self._start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def gradient_plan(model: keras.Model, x_batch) -> Any:
    """{layer name: "rule:<RuleClass>" | "local" | "jacobian"}, or a string saying why not."""
    import tfdp.training  # pylint: disable=import-outside-toplevel

    planner = getattr(tfdp.training, "gradient_plan", None)
    if planner is None:
        return PLAN_UNAVAILABLE
    try:
        return dict(planner(model, x_batch))
    except Exception as error:  # pylint: disable=broad-except  (a report, not a failure)
        return f"{PLAN_UNAVAILABLE}: {type(error).__name__}: {error}"


def plan_counts(plan: Any) -> Optional[Dict[str, int]]:
    """How many layers took each path ({"rule": n, "local": n, "jacobian": n}), or None."""
    if not isinstance(plan, dict):
        return None
    counts = {"rule": 0, "local": 0, "jacobian": 0}
    for path in plan.values():
        kind = str(path).split(":")[0]
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def measure(model_name: str, config: str, *, num_examples: Optional[int] = None,
            batch_size: Optional[int] = None, epochs: int = 3, warmup_epochs: int = 1,
            slow_steps: int = 2, seed: int = 0) -> Dict[str, Any]:
    """Trains one zoo model in one configuration; seconds per epoch, peak memory, gradient plan.

    Fast configurations run `warmup_epochs` (tracing, first-touch allocations) then `epochs`
    timed epochs in one `fit`, and report the best (a load burst on a shared machine only
    slows some epochs). Slow ones (`SLOW_CONFIGS`) time `slow_steps` steps after one warm-up
    step and scale to an epoch. `num_examples` and `batch_size` default to the zoo model's.
    The peak memory is read before the gradient plan is computed (the plan traces the model
    again), so it is the training's own.
    """
    keras.utils.set_random_seed(seed)
    built = zoo.build_zoo_model(model_name)
    batch = int(batch_size or built.batch_size)
    n = int(num_examples or built.data.num_examples)
    x, y = built.data(n, seed=seed)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).cache()
    steps_per_epoch = -(-n // batch)
    model = compile_for(config, built.model)
    rss_before = peak_rss_mb()
    result: Dict[str, Any] = {"model": model_name, "config": config, "batch_size": batch,
                              "num_examples": n, "steps_per_epoch": steps_per_epoch,
                              "parameters": int(built.model.count_params())}
    if config in SLOW_CONFIGS:
        steps = max(1, min(int(slow_steps), steps_per_epoch))
        model.fit(data.take(1), epochs=1, verbose=0, shuffle=False)
        start = time.perf_counter()
        model.fit(data.take(steps), epochs=1, verbose=0, shuffle=False)
        result["seconds_per_epoch"] = (time.perf_counter() - start) / steps * steps_per_epoch
        result["timed_steps"] = steps
    else:
        timer = _EpochTimes()
        model.fit(data, epochs=int(warmup_epochs) + int(epochs), verbose=0, callbacks=[timer],
                  shuffle=False)
        timed = timer.seconds[int(warmup_epochs):] or timer.seconds
        result["seconds_per_epoch"] = min(timed)
        result["epoch_seconds"] = timer.seconds
        result["warmup_epochs"] = int(warmup_epochs)
    result["peak_rss_mb"] = peak_rss_mb()
    result["rss_before_fit_mb"] = rss_before  # peak RSS with TensorFlow, model and data loaded
    if config == FAST:
        plan = gradient_plan(model, x[:batch])
        result["plan"] = plan
        result["plan_counts"] = plan_counts(plan)
    return result


def compare(results: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    """DP / non-private ratios of one model's results ({config: measure(...) or {"error": ...}}).

    Returns {config: {"time_ratio", "memory_ratio", "training_memory_ratio"}} for every DP
    configuration measured alongside a measured baseline: seconds per epoch, peak RSS of the
    process (TensorFlow itself included), and the growth of peak RSS during `fit` (None when
    the baseline's is 0).
    """
    base = results.get(BASELINE, {})
    out: Dict[str, Any] = {}
    if "seconds_per_epoch" not in base:
        return out
    for config, result in results.items():
        if config == BASELINE or "seconds_per_epoch" not in result:
            continue
        base_growth = base["peak_rss_mb"] - base.get("rss_before_fit_mb", base["peak_rss_mb"])
        growth = result["peak_rss_mb"] - result.get("rss_before_fit_mb", result["peak_rss_mb"])
        out[config] = {
            "time_ratio": result["seconds_per_epoch"] / base["seconds_per_epoch"],
            "memory_ratio": result["peak_rss_mb"] / base["peak_rss_mb"],
            "training_memory_ratio": growth / base_growth if base_growth > 0 else None,
        }
    return out


def _plan_cell(plan: Any) -> str:
    counts = plan_counts(plan)
    if counts is None:
        return PLAN_UNAVAILABLE if plan is not None else "-"
    return f"{counts['rule']}/{counts['local']}/{counts['jacobian']}"


def _seconds(result: Dict[str, Any]) -> str:
    return f"{result['seconds_per_epoch']:.3f}" if "seconds_per_epoch" in result else "failed"


def _mb(result: Dict[str, Any]) -> str:
    return f"{result['peak_rss_mb']:.0f}" if "peak_rss_mb" in result else "-"


def format_table(report: Dict[str, Any]) -> List[str]:
    """The report as text: one row per model (no-DP vs the fast path), then the details.

    Columns: batch size, examples, seconds per epoch of each, their ratio, peak RSS of each
    process (MB), its ratio ("mem x"), the ratio of the RSS growth during fit ("fit x"), and
    how many layers with weights took a rule, the local fallback or the Jacobian.
    """
    header = (f"{'model':<21}{'batch':>6}{'n':>6}{'no-DP s':>9}{'DP s':>9}{'DP/no-DP':>9}"
              f"{'no-DP MB':>9}{'DP MB':>8}{'mem x':>7}{'fit x':>7}  rule/local/jacobian")
    lines = [header, "-" * len(header)]
    notes = []
    for name, entry in report["models"].items():
        results = entry["results"]
        base, fast = results.get(BASELINE, {}), results.get(FAST, {})
        ratios = entry.get("ratios", {}).get(FAST, {})
        time_ratio = f"{ratios['time_ratio']:.2f}" if ratios else "-"
        memory_ratio = f"{ratios['memory_ratio']:.2f}" if ratios else "-"
        growth_ratio = ratios.get("training_memory_ratio")
        growth_ratio = f"{growth_ratio:.2f}" if growth_ratio is not None else "-"
        lines.append(
            f"{name:<21}{entry['batch_size']:>6}{entry['num_examples']:>6}{_seconds(base):>9}"
            f"{_seconds(fast) if fast else '-':>9}{time_ratio:>9}{_mb(base):>9}{_mb(fast):>8}"
            f"{memory_ratio:>7}{growth_ratio:>7}  {_plan_cell(fast.get('plan')) if fast else '-'}")
        plan = fast.get("plan")
        if isinstance(plan, dict):
            slow = {layer: path for layer, path in plan.items() if not path.startswith("rule")}
            if slow:
                notes.append(f"  {name}: not by a rule: "
                             + ", ".join(f"{layer} ({path})" for layer, path in slow.items()))
        elif isinstance(plan, str) and plan != PLAN_UNAVAILABLE:
            notes.append(f"  {name}: {plan}")
        for config, result in results.items():
            if "error" in result:
                notes.append(f"  {name} {config} failed: {result['error']}")
            elif config not in (BASELINE, FAST):
                ratio = entry.get("ratios", {}).get(config, {})
                notes.append(f"  {name} {config}: {_seconds(result)} s/epoch"
                             + (f" ({ratio['time_ratio']:.1f}x no-DP, "
                                f"{result['peak_rss_mb']:.0f} MB)" if ratio else ""))
    if notes:
        lines += [""] + notes
    for config, reason in report.get("unavailable", {}).items():
        lines.append(f"  {config}: unavailable ({reason})")
    return lines
