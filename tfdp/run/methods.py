"""What each method of a run needs: its model, optimizer, loss, calibration and privacy record.

The DP-SGD mechanisms (tfdp.mechanisms) train a tfdp DP optimizer through
tfdp.make_private's train step and are accounted from the optimizer's ledger.
Residual perturbation and NeuralDP build their own architecture (the method is in
the model), train with an ordinary optimizer and report epsilon = inf with the
reasons (NeuralDP's claimed figure labelled beside it). No-DP trains the plain model.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Dict, Optional

import keras
import numpy as np

import tfdp.accounting
import tfdp.data
import tfdp.training
from tfdp import mechanisms
from tfdp.optimizers import DPKerasAdagradOptimizer, DPKerasAdamOptimizer, DPKerasSGDOptimizer
from tfdp import models
from tfdp.models.backbones import backbone_classifier, backbone_statement
from tfdp.models.neuraldp import PLACEMENT as NEURALDP_PLACEMENT, neuraldp_model
from tfdp.models.residual_perturbation import residual_perturbation_resnet
from tfdp.run.config import NEURALDP, RESIDUAL_PERTURBATION, RunConfig

# Base optimizer name -> (plain Keras class, tfdp DP class).
_OPTIMIZER_CLASSES = {
    "sgd": (keras.optimizers.SGD, DPKerasSGDOptimizer),
    "adam": (keras.optimizers.Adam, DPKerasAdamOptimizer),
    "adagrad": (keras.optimizers.Adagrad, DPKerasAdagradOptimizer),
}


def build_model(config: RunConfig, data: Any) -> keras.Model:
    """The configured model for `data` (anything with input_shape and num_classes).

    Residual perturbation and NeuralDP build their own architecture; `config.backbone` a
    keras.applications backbone under a Dense head (tfdp.models.backbones).
    """
    if config.backbone is not None:
        return backbone_classifier(config.backbone, data.input_shape, data.num_classes,
                                   weights_path=config.backbone_weights,
                                   fine_tune=config.fine_tune,
                                   fine_tune_blocks=config.fine_tune_blocks,
                                   lora_rank=config.lora_rank)
    if config.mechanism == RESIDUAL_PERTURBATION:
        return residual_perturbation_resnet(data.input_shape, data.num_classes, gamma=config.gamma,
                                            noise=config.residual_noise)
    if config.mechanism == NEURALDP:
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

    use_fast_path = False


def make_augmentation(config: RunConfig, input_shape) -> Optional[keras.Model]:
    """The configured augmentation (None for "none"), seeded by the run's seed."""
    return tfdp.training.make_augmentation(config.augmentation, input_shape, seed=config.seed)


def make_trainable(config: RunConfig, model: keras.Model) -> keras.Model:
    """The model `fit` trains: DP-SGD needs tfdp.make_private's train step, on either path.

    The private step applies the augmentation (K copies per example, averaged before
    clipping) and the physical batch size; other methods get augmented data instead
    (`augmented_batches`).
    """
    if not config.uses_dp_optimizer:
        return model
    options = dict(augment=make_augmentation(config, model.input_shape[1:]),
                   augmentation_multiplicity=config.augmentation_multiplicity,
                   physical_batch_size=config.physical_batch_size,
                   grouped=config.per_patient,
                   training_metrics=config.record_training_metrics)
    private = tfdp.training.make_private(model, **options)
    if config.fast_path:
        return private
    slow = OptimizerPathModel(private.input, private.output, name=private.name)
    slow.set_step_options(**options)
    return slow


def augmented_batches(config: RunConfig, batches, input_shape):
    """For methods without the private step: each batch's examples repeated K times and
    augmented in the input pipeline (the same data No-DP's comparison rows see)."""
    augment = make_augmentation(config, input_shape)
    if augment is None:
        return batches
    options = tfdp.training.StepOptions(
        augment=augment, augmentation_multiplicity=config.augmentation_multiplicity)
    return batches.map(lambda x, y: options.expand(x, y, None)[:2])


def learning_rate(config: RunConfig, num_train: Optional[int] = None):
    """The learning rate, or its schedule (cosine decay to 0 over the planned steps)."""
    if config.learning_rate_schedule == "constant":
        return config.learning_rate
    if num_train is None:
        raise ValueError("A cosine learning-rate schedule needs the number of training examples.")
    return keras.optimizers.schedules.CosineDecay(config.learning_rate,
                                                  planned_steps(config, num_train))


def make_optimizer(config: RunConfig, num_train: Optional[int] = None
                   ) -> keras.optimizers.Optimizer:
    """The matching tfdp DP optimizer for DP-SGD, else a plain Keras optimizer.

    With `ema_momentum` the optimizer keeps Keras's moving average of the weights,
    ema_t = m * ema_(t-1) + (1 - m) * w_t (ema_1 = w_1), and `fit` ends by writing it into
    the model: evaluation and export use the average (post-processing, no privacy cost).
    """
    plain, private = _OPTIMIZER_CLASSES[config.optimizer]
    base: Dict[str, Any] = dict(learning_rate=learning_rate(config, num_train))
    if config.ema_momentum is not None:
        base.update(use_ema=True, ema_momentum=config.ema_momentum)
    if not config.uses_dp_optimizer:
        return plain(**base)
    clip = mechanisms.get_mechanism(config.mechanism).clip_argument
    kwargs: Dict[str, Any] = dict(
        mechanism=config.mechanism,
        noise_schedule=config.noise_schedule,
        noise_probability=config.noise_probability,
        on_skip=config.on_skip,
        noise_multiplier=config.noise_multiplier,
        insecure_reproducible_seed=insecure_run_seed(config),
        floating_point_safe_noise=config.floating_point_safe_noise,
        **base,
    )
    kwargs[clip] = getattr(config, clip)
    if config.bands is not None:
        kwargs.update(bands=config.bands,
                      strategy_coefficients=strategy_coefficients(config, num_train))
    if config.sampling == mechanisms.Sampling.POISSON:
        # Poisson batches vary in size: dividing by the expected size keeps the update unbiased.
        kwargs["expected_batch_size"] = config.batch_size
    return private(**kwargs)


def insecure_run_seed(config: RunConfig, epoch: int = 0) -> Optional[int]:
    """The insecure reproducible seed of a run (resumed after `epoch` epochs), or None.

    None unless the run opted in with `insecure_reproducible_seed`. Derived from that seed,
    the run's `seed` and the epoch it resumes after, so that repeated seeds and resumed
    runs do not repeat each other's batches.
    """
    if config.insecure_reproducible_seed is None:
        return None
    parts = [int(config.insecure_reproducible_seed), int(config.seed), int(epoch), 0x5EED]
    return int(np.random.SeedSequence(parts).generate_state(1)[0])


def make_loss(config: RunConfig) -> keras.losses.Loss:
    """Cross-entropy on logits: per example for DP-SGD (clipping needs it), averaged otherwise."""
    if config.uses_dp_optimizer:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def strategy_coefficients(config: RunConfig, num_train: Optional[int]):
    """--mechanism=banded_mf's coefficients: None (the default construction), or optimized
    for the run's planned steps with --strategy_optimization."""
    if not config.strategy_optimization:
        return None
    if num_train is None:
        raise ValueError("--strategy_optimization needs the number of training examples.")
    return _optimized_coefficients(config.bands, planned_steps(config, num_train))


@functools.lru_cache(maxsize=32)
def _optimized_coefficients(bands: int, steps: int):
    return tuple(mechanisms.optimize_banded_toeplitz(bands, steps))


def steps_per_epoch(config: RunConfig, num_train: int) -> int:
    """ceil(n / batch); for --mechanism=banded_mf rounded up to whole cycles of --bands."""
    if config.bands is not None:
        return tfdp.data.cyclic_steps_per_epoch(num_train, config.batch_size, config.bands)
    return math.ceil(num_train / config.batch_size)


def planned_steps(config: RunConfig, num_train: int) -> int:
    """Steps the run will take: `steps_per_epoch` per epoch, for every sampling."""
    return config.epochs * steps_per_epoch(config, num_train)


def calibrate(config: RunConfig, num_train: int) -> float:
    """The noise multiplier that reaches `target_epsilon` after the planned training.

    For NeuralDP the target is the preprint's claimed figure (a Gaussian mechanism on
    the activations, accounted like DP-SGD), which is not a guarantee. Calibrated on
    the steps the run really takes (`planned_steps`). For the random schedule the
    target applies to the expected number of noisy steps: a formal guarantee with
    on_skip="drop" (up to the realized count), the paper's convention (not a
    guarantee) with on_skip="release".
    """
    if config.mechanism == NEURALDP:
        # The claim's own accounting (tfdp.accounting.neuraldp_privacy): RDP.
        mechanism, schedule, probability = "gaussian", mechanisms.NoiseSchedule.REGULAR, 1.0
        accountant = mechanisms.Accountant.RDP.value
    else:
        mechanism, schedule, probability = (config.mechanism, config.noise_schedule,
                                            config.noise_probability)
        accountant = config.accountant
    return _calibrated(config.target_epsilon, config.delta, num_train, config.batch_size,
                       planned_steps(config, num_train), mechanism, str(schedule),
                       float(probability), str(config.sampling), str(accountant),
                       config.bands if mechanism == "banded_mf" else None)


@functools.lru_cache(maxsize=256)
def _calibrated(target_epsilon, delta, num_train, batch_size, steps, mechanism, schedule,
                probability, sampling, accountant, bands=None) -> float:
    # A pure function of its settings, and ~1 s each: seeds and shadow models reuse it.
    return float(tfdp.accounting.calibrate_noise_multiplier(
        target_epsilon, delta, num_train, batch_size, steps=steps, mechanism=mechanism,
        noise_schedule=schedule, noise_probability=probability, sampling=sampling,
        accountant=accountant, bands=bands,
    ))


def privacy_record(config: RunConfig, optimizer: keras.optimizers.Optimizer,
                   num_train: int) -> "tfdp.accounting.PrivacyRecord":
    """The privacy record of the steps the optimizer took (its ledger, for DP-SGD).

    `num_train` counts the privacy units: patients for a per-patient run.
    """
    if not config.is_private:
        return tfdp.accounting.no_privacy(config.delta)
    if config.uses_dp_optimizer:
        return tfdp.accounting.epsilon_from_ledger(
            optimizer, num_train, delta=config.delta, sampling=config.sampling,
            batch_size=config.batch_size, privacy_unit=config.privacy_unit,
            accountant=config.accountant)
    steps = int(optimizer.iterations.numpy())
    if config.mechanism == RESIDUAL_PERTURBATION:
        return tfdp.accounting.residual_perturbation_privacy(
            config.gamma, num_examples=num_train, batch_size=config.batch_size, steps=steps,
            delta=config.delta, noise=config.residual_noise)
    return tfdp.accounting.neuraldp_privacy(
        config.noise_multiplier, config.activation_clip_norm, num_examples=num_train,
        batch_size=config.batch_size, steps=steps, delta=config.delta,
        sampling=config.sampling, layer_description=NEURALDP_PLACEMENT)


def backbone_paragraph(config: RunConfig) -> str:
    """The privacy statement's paragraph on the backbone ("" without one): which one, the
    fine-tuning mode, and whether its weights are pretrained (from which file) or random."""
    if config.backbone is None:
        return ""
    return backbone_statement(config.backbone, config.fine_tune, config.backbone_weights,
                              config.fine_tune_blocks, config.lora_rank)


def step_counts(config: RunConfig, optimizer: keras.optimizers.Optimizer) -> Dict[str, int]:
    """The ledger: applied, noisy and dropped steps, and all steps (applied + dropped)."""
    if not config.uses_dp_optimizer:
        applied = int(optimizer.iterations.numpy())
        return {"applied_steps": applied, "noisy_steps": 0, "dropped_steps": 0, "steps": applied}
    ledger = tfdp.accounting.read_ledger(optimizer)  # the counters the accountant reads
    return {k: ledger[k] for k in ("applied_steps", "noisy_steps", "dropped_steps", "steps")}
