"""Train one model with one privacy method and report utility and epsilon.

Example (the bundled digits, Gaussian DP-SGD with noise every step):

    .venv/bin/python scripts/train.py --dataset=digits --mechanism=gaussian \
        --noise_schedule=regular --noise_multiplier=1.1 --l2_norm_clip=1.0 \
        --epochs=5 --batch_size=64 --learning_rate=0.5

Two other methods train with an ordinary optimizer and have NO formal guarantee
(epsilon = inf, with the reasons in the statement): `--mechanism=residual_perturbation
--gamma=0.5` (a ResNet with Gaussian noise on every residual branch) and
`--mechanism=neuraldp --noise_multiplier=1.0` (per-example clip + noise on one layer's
activations; the withdrawn preprint's claimed epsilon is reported, labelled).

Prints the loss, accuracy and epsilon after every epoch and writes a metrics JSON
(test accuracy, precision, recall, F1; epsilon and the privacy statement).
`--model_dir` keeps checkpoints (model, optimizer and the DP ledger): rerunning
the same command resumes where it stopped and keeps counting privacy spent.
`scripts/compare.py` reuses `TrainConfig` and `train_and_evaluate` from here.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

import _cli  # noqa: E402 (scripts/ is sys.path[0] when a script runs)

_cli.quiet_tensorflow_startup()

import numpy as np  # noqa: E402
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

import models  # noqa: E402
from models.neuraldp import PLACEMENT as NEURALDP_PLACEMENT, neuraldp_model  # noqa: E402
from models.residual_perturbation import residual_perturbation_resnet  # noqa: E402
import tfdp  # noqa: E402
import tfdp.attacks  # noqa: E402
import tfdp.data  # noqa: E402
import tfdp.export  # noqa: E402
import tfdp.training  # noqa: E402
from tfdp._validation import (  # noqa: E402
    check_choice,
    check_positive,
    check_positive_int,
    check_probability,
)

MECHANISMS = ("none", "gaussian", "laplace", "residual_perturbation", "neuraldp")
DP_SGD_MECHANISMS = ("gaussian", "laplace")
# Trained with an ordinary optimizer; no formal guarantee (tfdp.accounting.other_methods).
OTHER_METHODS = ("residual_perturbation", "neuraldp")
# Each other method's own flags, and the model it builds (its architecture is the method).
_METHOD_FLAGS = {"residual_perturbation": ("gamma", "residual_noise"),
                 "neuraldp": ("activation_clip_norm",)}
_METHOD_MODELS = {"residual_perturbation": "residual_perturbation_resnet",
                  "neuraldp": "neuraldp"}
RESIDUAL_NOISE = ("additive", "multiplicative")
SCHEDULES = ("regular", "random")
OPTIMIZERS = ("sgd", "adam", "adagrad")
SAMPLINGS = ("poisson", "shuffle")
# Settings that fix what the privacy ledger in a --model_dir means; a resumed run must keep them.
_LEDGER_KEYS = (
    "dataset", "data_dir", "split_seed", "max_train_examples", "model", "mechanism",
    "noise_schedule", "noise_probability", "on_skip", "noise_multiplier", "l2_norm_clip",
    "l1_norm_clip", "batch_size", "optimizer", "delta", "sampling", "image_size",
    "gamma", "residual_noise", "activation_clip_norm",
)


@dataclasses.dataclass
class TrainConfig:
    """Everything one training run needs (the flags of this script, as data)."""

    dataset: str = "digits"
    data_dir: Optional[str] = None
    model: str = "auto"
    mechanism: str = "gaussian"
    noise_schedule: str = "regular"
    noise_probability: float = 1.0
    on_skip: str = "release"
    noise_multiplier: Optional[float] = None
    target_epsilon: Optional[float] = None
    l2_norm_clip: Optional[float] = None
    l1_norm_clip: Optional[float] = None
    batch_size: int = 64
    epochs: int = 5
    learning_rate: float = 0.1
    optimizer: str = "sgd"
    delta: float = 1e-5
    seed: int = 0
    split_seed: int = 0
    sampling: str = "poisson"
    image_size: Optional[int] = None
    download: bool = False
    max_train_examples: Optional[int] = None
    max_test_examples: Optional[int] = None
    model_dir: Optional[str] = None
    export_dir: Optional[str] = None
    export_name: Optional[str] = None
    metrics_path: Optional[str] = None
    fast_path: bool = True
    gamma: Optional[float] = None
    residual_noise: Optional[str] = None
    activation_clip_norm: Optional[float] = None

    def resolved(self) -> "TrainConfig":
        """A checked copy with the clip norms defaulted; raises ValueError on bad settings."""
        c = dataclasses.replace(self)
        check_choice("mechanism", c.mechanism, MECHANISMS)
        check_choice("noise_schedule", c.noise_schedule, SCHEDULES)
        check_choice("on_skip", c.on_skip, ("release", "drop"))
        check_choice("optimizer", c.optimizer, OPTIMIZERS)
        check_choice("sampling", c.sampling, SAMPLINGS)
        c.noise_probability = check_probability("noise_probability", c.noise_probability)
        c.batch_size = check_positive_int("batch_size", c.batch_size)
        c.epochs = check_positive_int("epochs", c.epochs)
        c.learning_rate = check_positive("learning_rate", c.learning_rate)
        c.delta = check_positive("delta", c.delta)
        if c.delta >= 1:
            raise ValueError(f"`delta` must be in (0, 1), got {c.delta}; 1/num_examples or less "
                             "is usual.")
        misplaced = [k for k in ("gamma", "residual_noise", "activation_clip_norm")
                     if getattr(c, k) is not None and k not in _METHOD_FLAGS.get(c.mechanism, ())]
        if misplaced:
            owners = {k: m for m, keys in _METHOD_FLAGS.items() for k in keys}
            raise ValueError(", ".join(f"--{k} belongs to --mechanism={owners[k]}" for k in misplaced)
                             + f"; drop it with --mechanism={c.mechanism}.")
        if c.mechanism in OTHER_METHODS:
            return _resolve_other_method(c)
        if c.mechanism == "none":
            given = [k for k in ("noise_multiplier", "target_epsilon", "l2_norm_clip",
                                 "l1_norm_clip") if getattr(c, k) is not None]
            if given:
                raise ValueError(
                    f"--mechanism=none trains without privacy, so {', '.join('--' + g for g in given)} "
                    "would have no effect; drop them or choose --mechanism=gaussian|laplace."
                )
            if c.noise_schedule != "regular" or c.noise_probability != 1.0:
                raise ValueError(
                    "--noise_schedule/--noise_probability need a noise mechanism; with "
                    "--mechanism=none leave them at their defaults."
                )
            return c
        if (c.noise_multiplier is None) == (c.target_epsilon is None):
            raise ValueError(
                "Give exactly one of --noise_multiplier (noise std over the clip) or "
                "--target_epsilon (the noise is then calibrated to reach it)"
                + (", not both." if c.noise_multiplier is not None else ".")
            )
        if c.noise_multiplier is not None:
            c.noise_multiplier = check_positive("noise_multiplier", c.noise_multiplier)
        if c.target_epsilon is not None:
            c.target_epsilon = check_positive("target_epsilon", c.target_epsilon)
        if c.noise_schedule == "regular" and c.noise_probability != 1.0:
            raise ValueError(
                "--noise_probability applies to --noise_schedule=random; the regular schedule "
                "adds noise at every step."
            )
        if c.noise_schedule == "random" and c.noise_probability == 0.0:
            raise ValueError(
                "--noise_probability=0 never adds noise; use a probability in (0, 1] or "
                "--mechanism=none."
            )
        if c.mechanism == "gaussian":
            if c.l1_norm_clip is not None:
                raise ValueError("Gaussian noise needs --l2_norm_clip; --l1_norm_clip is for "
                                 "--mechanism=laplace.")
            c.l2_norm_clip = check_positive("l2_norm_clip", 1.0 if c.l2_norm_clip is None
                                            else c.l2_norm_clip)
        else:
            if c.l2_norm_clip is not None:
                raise ValueError("Laplace noise is only DP with L1 clipping: use --l1_norm_clip "
                                 "instead of --l2_norm_clip.")
            c.l1_norm_clip = check_positive("l1_norm_clip", 1.0 if c.l1_norm_clip is None
                                            else c.l1_norm_clip)
        return c

    @property
    def is_private(self) -> bool:
        """True when a privacy method is used (DP-SGD noise, residual perturbation, NeuralDP)."""
        return self.mechanism != "none"

    @property
    def uses_dp_optimizer(self) -> bool:
        """True for the DP-SGD mechanisms: a tfdp DP optimizer, its ledger and accountant."""
        return self.mechanism in DP_SGD_MECHANISMS

    @property
    def has_formal_guarantee(self) -> bool:
        """False for No-DP, the other methods, and the random schedule releasing noiseless steps."""
        if not self.uses_dp_optimizer:
            return False
        return not (self.noise_schedule == "random" and self.on_skip == "release"
                    and self.noise_probability < 1.0)

    def method_name(self) -> str:
        """The paper's name of the method (e.g. "Gaussian RanN-DP-SGD")."""
        if not self.is_private:
            return "No-DP"
        if self.mechanism == "residual_perturbation":
            return "Residual perturbation" + (
                " (multiplicative)" if self.residual_noise == "multiplicative" else "")
        if self.mechanism == "neuraldp":
            return "NeuralDP"
        schedule = "RanN" if self.noise_schedule == "random" else "RegN"
        drop = " (drop)" if self.noise_schedule == "random" and self.on_skip == "drop" else ""
        return f"{self.mechanism.capitalize()} {schedule}-DP-SGD{drop}"


def _resolve_other_method(c: TrainConfig) -> TrainConfig:
    """Checks and defaults of residual perturbation / NeuralDP settings (`c` is a copy)."""
    name = c.mechanism
    if c.noise_schedule != "regular" or c.noise_probability != 1.0 or c.on_skip != "release":
        raise ValueError(f"--noise_schedule, --noise_probability and --on_skip are DP-SGD settings; "
                         f"with --mechanism={name} leave them at their defaults.")
    if c.l2_norm_clip is not None or c.l1_norm_clip is not None:
        raise ValueError(f"--mechanism={name} clips no gradients: drop --l2_norm_clip/--l1_norm_clip"
                         + (" (the activation clip is --activation_clip_norm)."
                            if name == "neuraldp" else "."))
    if c.model not in ("auto", _METHOD_MODELS[name]):
        raise ValueError(f"--mechanism={name} trains its own model ({_METHOD_MODELS[name]}); "
                         f"leave --model=auto, got --model={c.model}.")
    c.model = _METHOD_MODELS[name]
    if name == "residual_perturbation":
        if c.noise_multiplier is not None or c.target_epsilon is not None:
            raise ValueError(
                "--mechanism=residual_perturbation has no computed epsilon, so nothing can be "
                "calibrated to --target_epsilon, and --noise_multiplier does not apply: set the "
                "noise with --gamma.")
        if c.gamma is None:
            raise ValueError("--mechanism=residual_perturbation needs --gamma, the scale of the "
                             "Gaussian noise added to every residual branch (e.g. 0.5).")
        c.gamma = check_positive("gamma", c.gamma)
        c.residual_noise = check_choice("residual_noise", c.residual_noise or "additive",
                                        RESIDUAL_NOISE)
        return c
    if (c.noise_multiplier is None) == (c.target_epsilon is None):
        raise ValueError(
            "--mechanism=neuraldp needs exactly one of --noise_multiplier (activation noise std "
            "over --activation_clip_norm) or --target_epsilon (the noise is calibrated so that "
            "the withdrawn preprint's CLAIMED epsilon reaches it; not a guarantee).")
    if c.noise_multiplier is not None:
        c.noise_multiplier = check_positive("noise_multiplier", c.noise_multiplier)
    if c.target_epsilon is not None:
        c.target_epsilon = check_positive("target_epsilon", c.target_epsilon)
    c.activation_clip_norm = check_positive(
        "activation_clip_norm", 1.0 if c.activation_clip_norm is None else c.activation_clip_norm)
    return c


# ----- loading -----

def load_data(config: TrainConfig) -> "tfdp.data.Dataset":
    """The configured data set (with its fixed split), cut to the max_*_examples limits."""
    kwargs: Dict[str, Any] = {"seed": config.split_seed}
    if config.image_size is not None:
        kwargs["image_size"] = config.image_size
    if config.download:
        kwargs["download"] = True
    data = tfdp.data.load_dataset(config.dataset, data_dir=config.data_dir, **kwargs)
    if config.max_train_examples or config.max_test_examples:
        data = data.subset(config.max_train_examples, config.max_test_examples,
                           seed=config.split_seed)
    return data


# ----- the privacy parts -----

def planned_steps(config: TrainConfig, num_train: int) -> int:
    """Steps the run will take: ceil(n / batch) per epoch, for shuffled and Poisson batches alike."""
    return config.epochs * math.ceil(num_train / config.batch_size)


def calibrate(config: TrainConfig, num_train: int) -> float:
    """The noise multiplier that reaches `target_epsilon` after the planned training.

    For NeuralDP the target is the preprint's claimed figure (a Gaussian mechanism on
    the activations, accounted like DP-SGD), which is not a guarantee.
    Calibrated on the steps this script really takes (`planned_steps`, expressed in
    the accountant's epochs of n / batch steps). For the random schedule the target
    applies to the expected number of noisy steps (p x steps): a formal guarantee with
    on_skip="drop" (up to the realized count), the paper's convention (not a
    guarantee) with on_skip="release".
    """
    steps = planned_steps(config, num_train)
    if config.noise_schedule == "random":
        steps *= config.noise_probability
    return float(tfdp.calibrate_noise_multiplier(
        config.target_epsilon, config.delta, num_train, config.batch_size,
        steps * config.batch_size / num_train,
        mechanism="gaussian" if config.mechanism == "neuraldp" else config.mechanism,
        sampling=config.sampling,
    ))


def make_optimizer(config: TrainConfig) -> keras.optimizers.Optimizer:
    """The matching tfdp DP optimizer for DP-SGD, else a plain Keras optimizer."""
    if not config.uses_dp_optimizer:
        plain = {"sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam,
                 "adagrad": keras.optimizers.Adagrad}[config.optimizer]
        return plain(learning_rate=config.learning_rate)
    private = {"sgd": tfdp.DPKerasSGDOptimizer, "adam": tfdp.DPKerasAdamOptimizer,
               "adagrad": tfdp.DPKerasAdagradOptimizer}[config.optimizer]
    kwargs: Dict[str, Any] = dict(
        mechanism=config.mechanism,
        noise_schedule=config.noise_schedule,
        noise_probability=config.noise_probability,
        on_skip=config.on_skip,
        noise_multiplier=config.noise_multiplier,
        learning_rate=config.learning_rate,
        seed=config.seed,
    )
    if config.mechanism == "gaussian":
        kwargs["l2_norm_clip"] = config.l2_norm_clip
    else:
        kwargs["l1_norm_clip"] = config.l1_norm_clip
    if config.sampling == "poisson":
        # Poisson batches vary in size: dividing by the expected size keeps the update unbiased.
        kwargs["expected_batch_size"] = config.batch_size
    return private(**kwargs)


def make_loss(config: TrainConfig) -> keras.losses.Loss:
    """Cross-entropy on logits: per example for DP-SGD (clipping needs it), averaged otherwise."""
    if config.uses_dp_optimizer:
        return keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction=None)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def privacy_report(config: TrainConfig, optimizer, num_train: int) -> Dict[str, Any]:
    """Epsilon for the steps the optimizer's ledger recorded, as a JSON-friendly dict."""
    if not config.is_private:
        return {
            "epsilon": math.inf,
            "epsilon_noisy_steps_only": math.inf,
            "delta": config.delta,
            "accountant": None,
            "statement": "No-DP: trained without differential privacy; there is no privacy "
                         "guarantee (epsilon is infinite).",
        }
    if config.mechanism in OTHER_METHODS:
        return other_method_privacy(config, int(optimizer.iterations.numpy()), num_train)
    applied = int(optimizer.iterations.numpy())
    dropped = int(optimizer.dropped_steps.numpy())
    noisy = int(optimizer.noisy_steps.numpy())
    steps = applied + dropped
    if steps == 0:
        return {"epsilon": 0.0, "epsilon_noisy_steps_only": 0.0, "delta": config.delta,
                "accountant": None, "statement": "No training step was taken."}
    result = tfdp.compute_epsilon(
        num_train, config.batch_size, config.noise_multiplier, steps=steps,
        delta=config.delta, mechanism=config.mechanism, noise_schedule=config.noise_schedule,
        noise_probability=config.noise_probability, on_skip=config.on_skip,
        sampling=config.sampling, noisy_steps=noisy,
    )
    return result.to_dict()


def other_method_privacy(config: TrainConfig, steps: int, num_train: int) -> Dict[str, Any]:
    """Residual perturbation / NeuralDP: epsilon = inf with the reasons (and NeuralDP's claim)."""
    if config.mechanism == "residual_perturbation":
        result = tfdp.accounting.residual_perturbation_privacy(
            config.gamma, num_examples=num_train, batch_size=config.batch_size, steps=steps,
            delta=config.delta, noise=config.residual_noise)
    else:
        result = tfdp.accounting.neuraldp_privacy(
            config.noise_multiplier, config.activation_clip_norm, num_examples=num_train,
            batch_size=config.batch_size, steps=steps, delta=config.delta,
            sampling=config.sampling, layer_description=NEURALDP_PLACEMENT)
    return result.to_dict()


def build_model(config: TrainConfig, data) -> keras.Model:
    """The configured model; residual perturbation and NeuralDP build their own architecture."""
    if config.mechanism == "residual_perturbation":
        return residual_perturbation_resnet(data.input_shape, data.num_classes, gamma=config.gamma,
                                            noise=config.residual_noise)
    if config.mechanism == "neuraldp":
        return neuraldp_model(data.input_shape, data.num_classes,
                              clip_norm=config.activation_clip_norm,
                              noise_multiplier=config.noise_multiplier)
    return models.build_model(config.model, data.input_shape, data.num_classes)


class OptimizerPathModel(tfdp.training.PrivateModel):
    """--nofast_path: make_private's train step with the optimizer's own per-example gradients.

    A Keras 3 optimizer only sees averaged gradients, so even this path needs the private
    train step (the per-example losses); the clipped sum then comes from the DP optimizer's
    Jacobian path (`private_gradients`) instead of the layers' fast rules.
    """

    def _fast_private_gradients(self, optimizer, kind, tape, variables, records, example_losses,
                                total_loss, batch_size):
        return optimizer.private_gradients(example_losses, variables, tape=tape)


def make_trainable(config: TrainConfig, model: keras.Model) -> keras.Model:
    """The model `fit` trains: DP-SGD needs tfdp.make_private's train step, on either path."""
    if not config.uses_dp_optimizer:
        return model
    private = tfdp.make_private(model)
    if config.fast_path:
        return private
    return OptimizerPathModel(private.input, private.output, name=private.name)


# ----- evaluation -----

def evaluate_utility(model: keras.Model, data) -> Dict[str, float]:
    """Test accuracy, precision, recall, F1 (macro for multi-class) and ROC-AUC."""
    metrics = tfdp.attacks.utility_metrics(model, (data.x_test, data.y_test))
    return {k: (float(v) if isinstance(v, (int, float, np.number)) else v)
            for k, v in metrics.items()}


# ----- checkpoints: the model, the optimizer (with the DP ledger) and the epoch -----

class _EpochCheckpoint(keras.callbacks.Callback):
    """Saves model, optimizer (including the DP counters) and the epoch at each epoch end."""

    def __init__(self, manager: tf.train.CheckpointManager, epoch: tf.Variable):
        super().__init__()
        self._manager = manager
        self._epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        self._epoch.assign(epoch + 1)
        self._manager.save(checkpoint_number=epoch + 1)


def _ledger_settings(config: TrainConfig) -> Dict[str, Any]:
    return {k: getattr(config, k) for k in _LEDGER_KEYS}


def _open_model_dir(config: TrainConfig, model, optimizer, log) -> tuple:
    """Restores the latest checkpoint of --model_dir; returns (manager, epoch variable)."""
    os.makedirs(config.model_dir, exist_ok=True)
    settings_path = os.path.join(config.model_dir, "train_config.json")
    settings = _ledger_settings(config)
    if os.path.exists(settings_path):
        with open(settings_path) as f:
            saved = json.load(f)
        changed = {k: (saved.get(k), v) for k, v in settings.items() if saved.get(k) != v}
        if changed:
            details = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
            raise ValueError(
                f"--model_dir={config.model_dir} holds a run with other settings ({details}). "
                "Its privacy ledger only holds for those settings: resume with the same flags, "
                "or use a new --model_dir."
            )
    else:
        with open(settings_path, "w") as f:
            json.dump(settings, f, indent=2)
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch)
    manager = tf.train.CheckpointManager(checkpoint, os.path.join(config.model_dir, "checkpoints"),
                                         max_to_keep=2)
    if manager.latest_checkpoint:
        # Create the optimizer's slots first so every saved value lands immediately.
        optimizer.build(model.trainable_variables)
        checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        log(f"Resumed from {manager.latest_checkpoint} after epoch {int(epoch.numpy())}.")
    return manager, epoch


# ----- per-epoch progress -----

class _EpochLog(keras.callbacks.Callback):
    """Prints one line per epoch (loss, accuracy, epsilon, noise steps) and records it."""

    def __init__(self, config: TrainConfig, optimizer, log: Callable[[str], None]):
        super().__init__()
        self._config = config
        self._optimizer = optimizer
        self._log = log
        self._start = 0.0
        self._last_counts = (0, 0, 0)
        self.history: List[Dict[str, Any]] = []

    def _counts(self):
        if not self._config.uses_dp_optimizer:
            return int(self._optimizer.iterations.numpy()), 0, 0
        return (int(self._optimizer.iterations.numpy()), int(self._optimizer.noisy_steps.numpy()),
                int(self._optimizer.dropped_steps.numpy()))

    def on_train_begin(self, logs=None):
        self._last_counts = self._counts()

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        applied, noisy, dropped = self._counts()
        steps = (applied - self._last_counts[0]) + (dropped - self._last_counts[2])
        noisy_epoch = noisy - self._last_counts[1]
        self._last_counts = (applied, noisy, dropped)
        record = {
            "epoch": epoch + 1,
            "seconds": time.perf_counter() - self._start,
            "steps": steps,
            "noisy_steps": noisy_epoch,
            **{k: float(v) for k, v in logs.items()},
        }
        self.history.append(record)
        parts = [f"epoch {epoch + 1}/{self._config.epochs}",
                 f"loss={logs.get('loss', float('nan')):.4f}",
                 f"accuracy={logs.get('accuracy', float('nan')):.4f}"]
        if "val_accuracy" in logs:
            parts.append(f"test_accuracy={logs['val_accuracy']:.4f}")
        if self._config.mechanism in OTHER_METHODS:
            parts.append("epsilon=inf (no formal guarantee)")
        elif self._config.is_private:
            parts.append(f"noisy_steps={noisy_epoch}/{steps}")
            eps = logs.get("epsilon")
            if eps is not None:
                parts.append(f"epsilon={_format_epsilon(eps)}")
            eps_noisy = logs.get("epsilon_noisy_steps_only")
            if eps_noisy is not None and self._config.noise_schedule == "random":
                parts.append(f"epsilon_noisy_steps_only={_format_epsilon(eps_noisy)} "
                             "(paper's convention, not a guarantee)")
        else:
            parts.append("epsilon=inf (no privacy)")
        parts.append(f"{record['seconds']:.1f}s")
        self._log("  ".join(parts))


def _format_epsilon(value) -> str:
    value = float(value)
    return "inf" if math.isinf(value) else f"{value:.3f}"


# ----- the run -----

def train_and_evaluate(
    config: TrainConfig,
    data=None,
    *,
    log: Callable[[str], None] = print,
    verbose: int = 0,
) -> Dict[str, Any]:
    """Trains as configured, evaluates on the test split and returns the metrics record.

    Args:
      config: the run's settings (checked with `config.resolved()` here).
      data: an already loaded `tfdp.data.Dataset` (otherwise loaded from the config).
      log: where progress lines go.
      verbose: Keras's own progress output (0: only this script's lines).

    Returns a dict with "config", "method", "dataset", "utility" (test metrics),
    "privacy" (epsilon, statement, ...), "ledger" (steps, noisy steps), "history"
    (one record per epoch), "seconds_per_epoch", and "model" (the trained Keras
    model, not JSON; `write_metrics` leaves it out).
    """
    config = config.resolved()
    if config.export_dir:
        # A bad export name or a stray folder under it fails now, not after training.
        tfdp.export.check_export_target(config.export_dir, export_name(config))
    keras.utils.set_random_seed(config.seed)
    if data is None:
        data = load_data(config)
    if config.is_private and config.batch_size > data.num_train:
        raise ValueError(f"--batch_size={config.batch_size} is larger than the training set "
                         f"({data.num_train} examples).")
    if config.target_epsilon is not None:
        config.noise_multiplier = calibrate(config, data.num_train)
        log(f"Calibrated noise multiplier {config.noise_multiplier:.4f} for target epsilon "
            f"{config.target_epsilon} (delta {config.delta}).")

    model = make_trainable(config, build_model(config, data))
    optimizer = make_optimizer(config)
    model.compile(optimizer=optimizer, loss=make_loss(config), metrics=["accuracy"])

    callbacks: List[keras.callbacks.Callback] = []
    if config.uses_dp_optimizer:
        # With a target, stop before an epoch would exceed it. Only for the regular schedule:
        # the callback projects the next epoch as all-noisy, which the random one is not.
        callbacks.append(tfdp.PrivacyCallback(
            data.num_train, delta=config.delta, sampling=config.sampling, verbose=0,
            target_epsilon=(config.target_epsilon if config.noise_schedule == "regular"
                            else None),
        ))
    epoch_log = _EpochLog(config, optimizer, log)
    callbacks.append(epoch_log)
    initial_epoch = 0
    if config.model_dir:
        manager, epoch_variable = _open_model_dir(config, model, optimizer, log)
        initial_epoch = int(epoch_variable.numpy())
        callbacks.append(_EpochCheckpoint(manager, epoch_variable))

    if config.sampling == "poisson" and config.is_private:
        train_batches = data.poisson_batches(config.batch_size, seed=config.seed)
    else:
        train_batches = data.train_batches(config.batch_size, seed=config.seed)
    log(f"{config.method_name()} on {data.name} ({data.num_train} train / {data.num_test} test, "
        f"input {data.input_shape}, {data.num_classes} classes), model {model.name}, "
        f"{config.epochs} epochs of batch {config.batch_size}"
        + (f", noise multiplier {config.noise_multiplier:.4g}" if config.noise_multiplier
           else "") + (f", gamma {config.gamma:g}" if config.gamma else ""))
    if initial_epoch < config.epochs:
        # shuffle=False: the batches come shuffled or Poisson-sampled from tfdp.data already.
        model.fit(train_batches, epochs=config.epochs, initial_epoch=initial_epoch,
                  validation_data=data.test_batches(), callbacks=callbacks, verbose=verbose,
                  shuffle=False)
    else:
        log(f"--model_dir already holds {initial_epoch} epochs (>= --epochs={config.epochs}); "
            "evaluating without training.")

    utility = evaluate_utility(model, data)
    privacy = privacy_report(config, optimizer, data.num_train)
    ledger = {"applied_steps": int(optimizer.iterations.numpy())}
    if config.uses_dp_optimizer:
        ledger.update(noisy_steps=int(optimizer.noisy_steps.numpy()),
                      dropped_steps=int(optimizer.dropped_steps.numpy()))
        ledger["steps"] = ledger["applied_steps"] + ledger["dropped_steps"]
    else:
        ledger.update(noisy_steps=0, dropped_steps=0, steps=ledger["applied_steps"])
    seconds = [h["seconds"] for h in epoch_log.history]
    record = {
        "method": config.method_name(),
        "config": dataclasses.asdict(config),
        "dataset": data.summary(),
        "utility": utility,
        "privacy": privacy,
        "ledger": ledger,
        "history": epoch_log.history,
        "seconds_per_epoch": float(np.mean(seconds)) if seconds else None,
        "model": model,
    }
    log(f"Test: accuracy={utility['accuracy']:.4f} precision={utility['precision']:.4f} "
        f"recall={utility['recall']:.4f} f1={utility['f1']:.4f}")
    claimed = ("" if privacy.get("epsilon_claimed") is None else
               f" epsilon_claimed={_format_epsilon(privacy['epsilon_claimed'])} "
               f"({privacy['epsilon_claimed_by']}).")
    log(f"Privacy: epsilon={_format_epsilon(privacy['epsilon'])} (delta={config.delta}).{claimed} "
        f"{privacy['statement']}")
    if config.export_dir:
        record["export_path"] = export(config, model, privacy, log)
    return record


def export_name(config: TrainConfig) -> str:
    """--export_name, or <dataset>_<mechanism>_<schedule> made URL-safe (tfds:x -> tfds_x)."""
    default = f"{config.dataset}_{config.mechanism}_{config.noise_schedule}"
    return config.export_name or default.replace(":", "_").replace("/", "_")


def export(config: TrainConfig, model, privacy: Dict[str, Any], log) -> str:
    """Exports a SavedModel for TF Serving with the privacy record attached."""
    name = export_name(config)
    record = dict(privacy)
    record["training"] = {k: v for k, v in dataclasses.asdict(config).items()
                          if k not in ("model_dir", "export_dir", "metrics_path")}
    path = tfdp.export.export_saved_model(model, config.export_dir, name, privacy=record)
    log(f"Exported the SavedModel to {path}")
    return path


def to_json(record: Dict[str, Any]) -> Dict[str, Any]:
    """The record without the Keras model, with infinities as the string "inf"."""
    def clean(value):
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        if isinstance(value, (np.floating, float)):
            value = float(value)
            return "inf" if math.isinf(value) else (None if math.isnan(value) else value)
        if isinstance(value, np.integer):
            return int(value)
        return value
    return clean({k: v for k, v in record.items() if k != "model"})


def write_metrics(record: Dict[str, Any], path: str) -> None:
    """Writes `to_json(record)` to `path` (creating its folder)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(to_json(record), f, indent=2)


# ----- flags -----

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines this script's absl flags."""
    flags.DEFINE_string("dataset", "digits", "Data set: digits, breast_cancer, chest_xray, "
                        "pneumonia_mnist, or tfds:<name> (prepared in --data_dir).")
    flags.DEFINE_string("data_dir", None, "Folder of the data set (not for the bundled ones).")
    flags.DEFINE_integer("image_size", None, "Resize images to this many pixels per side "
                         "(chest_xray, pneumonia_mnist, tfds:).")
    flags.DEFINE_bool("download", False, "Let TFDS download and prepare a missing data set.")
    flags.DEFINE_string("model", "auto", "Model: auto, " + ", ".join(models.available_models()))
    flags.DEFINE_enum("mechanism", "gaussian", MECHANISMS,
                      "Noise mechanism (none = No-DP). residual_perturbation and neuraldp train "
                      "their own model with an ordinary optimizer and have no formal guarantee.")
    flags.DEFINE_enum("noise_schedule", "regular", SCHEDULES,
                      "regular: noise every step (RegN); random: noise when a Bernoulli coin "
                      "says so (RanN).")
    flags.DEFINE_float("noise_probability", 1.0, "p of the random schedule's coin.")
    flags.DEFINE_enum("on_skip", "release", ("release", "drop"),
                      "A noiseless step of the random schedule: release the exact clipped "
                      "gradient (the paper; no formal DP) or drop the step (DP holds).")
    flags.DEFINE_float("noise_multiplier", None, "Noise std (Gaussian) or scale (Laplace) over "
                       "the clip norm. Give this or --target_epsilon.")
    flags.DEFINE_float("target_epsilon", None, "Calibrate the noise to reach this epsilon.")
    flags.DEFINE_float("l2_norm_clip", None, "Per-example L2 clip (Gaussian; default 1.0).")
    flags.DEFINE_float("l1_norm_clip", None, "Per-example L1 clip (Laplace; default 1.0).")
    flags.DEFINE_integer("batch_size", 64, "Batch size (expected size under Poisson sampling).")
    flags.DEFINE_integer("epochs", 5, "Total number of epochs (a resumed run continues to it).")
    flags.DEFINE_float("learning_rate", 0.1, "Learning rate.")
    flags.DEFINE_enum("optimizer", "sgd", OPTIMIZERS, "Base optimizer.")
    flags.DEFINE_float("delta", 1e-5, "Delta of (epsilon, delta)-DP.")
    flags.DEFINE_integer("seed", 0, "Seed of weights, batches and noise.")
    flags.DEFINE_integer("split_seed", 0, "Seed of the train/test split.")
    flags.DEFINE_enum("sampling", "poisson", SAMPLINGS,
                      "poisson: batches as the accountant assumes; shuffle: fixed-size shuffled "
                      "batches (epsilon then reported under the Poisson assumption, labelled).")
    flags.DEFINE_integer("max_train_examples", None, "Use at most this many training examples.")
    flags.DEFINE_integer("max_test_examples", None, "Use at most this many test examples.")
    flags.DEFINE_string("model_dir", None, "Checkpoints; rerunning resumes and keeps the ledger.")
    flags.DEFINE_string("export_dir", None, "Export a SavedModel for TF Serving under this base.")
    flags.DEFINE_string("export_name", None, "Model name under --export_dir.")
    flags.DEFINE_bool("fast_path", True, "DP-SGD runs use tfdp.make_private's fast per-example "
                      "clipping (--nofast_path: per-example gradients from the optimizer's own, "
                      "slower Jacobian path, still in make_private's train step).")
    flags.DEFINE_float("gamma", None, "--mechanism=residual_perturbation: scale of the "
                       "Gaussian noise on every residual branch of the ResNet.")
    flags.DEFINE_enum("residual_noise", None, RESIDUAL_NOISE,
                      "--mechanism=residual_perturbation: additive (F + gamma*n, default) or "
                      "multiplicative (F + gamma*F*n) noise.")
    flags.DEFINE_float("activation_clip_norm", None, "--mechanism=neuraldp: per-example L2 "
                       "clip of the privatized activations (default 1.0).")
    flags.DEFINE_string("metrics_path", None, "Metrics JSON (default: <model_dir>/metrics.json "
                        "or results/train_metrics.json).")


def config_from_flags() -> TrainConfig:
    """The TrainConfig the parsed flags describe."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{name: FLAGS[name].value for name in fields})


def main(argv: List[str]) -> None:
    """Entry point: train, print, write the metrics JSON."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        config = config_from_flags()
        record = train_and_evaluate(config)
    except ValueError as error:
        sys.exit(f"train.py: error: {error}")
    path = config.metrics_path or (
        os.path.join(config.model_dir, "metrics.json") if config.model_dir
        else os.path.join("results", "train_metrics.json"))
    write_metrics(record, path)
    print(f"Wrote {path}")


if __name__ == "__main__":
    define_flags()
    from _cli import argv_with_helpful  # scripts/ is on sys.path when a script runs

    app.run(main, argv=argv_with_helpful())
