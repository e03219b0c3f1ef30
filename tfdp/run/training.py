"""`train_and_evaluate`: one run, from settings to a trained, evaluated, accounted model."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import keras

import tfdp.accounting
import tfdp.attacks
import tfdp.data
import tfdp.export
from tfdp.accounting import format_epsilon
from tfdp.accounting.counting import steps_from_epochs
from tfdp.accounting.statement import with_paragraph
from tfdp.mechanisms import NoiseSchedule, Sampling
from tfdp.run import checkpoint, exporting, methods, recipe
from tfdp.run.config import RunConfig
from tfdp.run.progress import EpochLog
from tfdp.run.result import RunResult
from tfdp.training.frozen_features import FrozenSplit, split_frozen_prefix


def load_data(config: RunConfig) -> "tfdp.data.Dataset":
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


UTILITY_KEYS = ("accuracy", "precision", "recall", "f1", "auc")
# Bundled data without patient ids, given documented pseudo-patients for --privacy_unit=patient.
SYNTHETIC_PATIENTS = {"digits": dict(min_size=1, max_size=5)}


def patient_data(config: RunConfig, data: "tfdp.data.Dataset",
                 log: Callable[[str], None] = print) -> "tfdp.data.Dataset":
    """`data` with a patient id per training example when the run is per patient.

    The ids come from the source (chest X-ray file names; breast_cancer's one row per
    patient). The bundled digits have none: each run then groups the training examples
    into synthetic pseudo-patients of 1 to 5 examples (`Dataset.with_synthetic_groups`,
    seeded by --split_seed). Any other source without ids is refused with the reason.
    """
    if not config.per_patient or data.groups_train is not None:
        return data
    if data.name in SYNTHETIC_PATIENTS:
        grouped = data.with_synthetic_groups(**SYNTHETIC_PATIENTS[data.name],
                                             seed=config.split_seed)
        log(f"{data.name} has no patient ids: {grouped.num_groups} synthetic pseudo-patients of "
            f"{SYNTHETIC_PATIENTS[data.name]['min_size']} to "
            f"{SYNTHETIC_PATIENTS[data.name]['max_size']} examples (seed {config.split_seed}).")
        return grouped
    raise ValueError(
        f"--privacy_unit=patient needs a patient id for every training example, and "
        f"{data.name} has none ({data.group_source or 'the loader gives no ids'}). Use "
        "--privacy_unit=example, or data whose source names the patient (the chest X-ray "
        "folders' personN_... / IM-NNNN-... file names).")


def num_units(config: RunConfig, data: "tfdp.data.Dataset") -> int:
    """How many privacy units the training split holds: patients or examples."""
    return int(data.num_groups) if config.per_patient else data.num_train


def unit_paragraph(config: RunConfig, data: "tfdp.data.Dataset") -> str:
    """The privacy statement's words on the patients: where the ids come from, the cap."""
    taken = ("all of their examples" if config.max_examples_per_patient is None else
             f"at most {config.max_examples_per_patient} of their examples (a cap fixed in "
             "advance; a patient's others wait for a later step)")
    return (f"Privacy unit: patient. {data.num_groups} patients hold the {data.num_train} "
            f"training examples; patient ids: {data.group_source}. Each sampled patient "
            f"contributes {taken}, averaged into one gradient that is clipped once.")


def diverged(model: keras.Model, data: "tfdp.data.Dataset") -> bool:
    """True when the trained model's test outputs hold NaN or infinite values."""
    return not np.all(np.isfinite(model.predict(data.x_test, verbose=0)))


def evaluate_utility(model: keras.Model, data: "tfdp.data.Dataset") -> Dict[str, Any]:
    """Test accuracy, precision, recall, F1 (macro for multi-class) and ROC-AUC."""
    metrics = tfdp.attacks.utility_metrics(model, (data.x_test, data.y_test))
    return {k: (float(v) if isinstance(v, (int, float, np.number)) else v)
            for k, v in metrics.items()}


@dataclasses.dataclass
class TrainedModel:
    """What `train_model` produced: the settings as run (noise calibrated), model, epoch log."""

    config: RunConfig
    model: keras.Model
    epoch_log: EpochLog

    @property
    def optimizer(self) -> keras.optimizers.Optimizer:
        """The optimizer the model was compiled and trained with (its privacy ledger)."""
        return self.model.optimizer


def train_model(
    config: RunConfig,
    data: "tfdp.data.Dataset",
    *,
    log: Callable[[str], None] = print,
    verbose: int = 0,
    validate: bool = True,
    track_privacy: bool = True,
    gradient_canaries: Optional[np.ndarray] = None,
    cache_frozen_features: bool = True,
) -> TrainedModel:
    """Calibrates, builds and trains one configured model on `data`'s training split.

    `config` must be validated. `validate=False` skips the per-epoch test metrics (the
    shadow and audit models of `tfdp.run.leakage` are never evaluated on the test
    split). `track_privacy=False` leaves out the per-epoch epsilon (`PrivacyCallback`,
    about 0.1 s of accounting per epoch for a new sampling rate): for models nobody
    releases, whose noise is calibrated to the target anyway. `gradient_canaries` (a bool
    array) installs the white-box audit's canaries in the DP optimizer
    (`add_gradient_canaries`), sampled at the run's sampling rate.
    """
    if config.export_dir:
        # A bad export name or a stray folder under it fails now, not after training.
        tfdp.export.check_export_target(config.export_dir, exporting.export_name(config))
    keras.utils.set_random_seed(config.seed)
    data = patient_data(config, data, log)
    units = num_units(config, data)
    unit_name = "patients" if config.per_patient else "examples"
    if config.is_private and config.batch_size > units:
        raise ValueError(f"--batch_size={config.batch_size} is larger than the training set "
                         f"({units} {unit_name}).")
    if config.target_epsilon is not None:
        config = dataclasses.replace(
            config, noise_multiplier=methods.calibrate(config, units))
        log(f"Calibrated noise multiplier {config.noise_multiplier:.4f} for target epsilon "
            f"{config.target_epsilon} (delta {config.delta}).")

    full_model = methods.build_model(config, data)
    if config.backbone is not None and config.backbone_weights is None:
        log(f"WARNING: --backbone={config.backbone} without --backbone_weights: the backbone "
            "has RANDOM weights and is NOT pretrained.")
    split = _frozen_split(config, full_model, data) if cache_frozen_features else None
    model = methods.make_trainable(config, full_model)
    optimizer = methods.make_optimizer(config, units)
    model.compile(optimizer=optimizer, loss=methods.make_loss(config), metrics=["accuracy"])
    # What fit trains: the model on the data, or its trainable head on the frozen features.
    fit_model, fit_data = model, data
    if split is not None:
        fit_model = methods.make_trainable(config, split.head)
        fit_model.compile(optimizer=optimizer, loss=methods.make_loss(config),
                          metrics=["accuracy"])
        fit_data = data.map_inputs(split.features_of, "(inputs: the model's frozen features)")
    if gradient_canaries is not None:
        if not config.uses_dp_optimizer:
            raise ValueError(f"{config.method_name()} has no DP optimizer to carry gradient "
                             "canaries: the white-box audit is for the DP-SGD mechanisms.")
        optimizer.add_gradient_canaries(np.asarray(gradient_canaries, bool),
                                        min(1.0, config.batch_size / units),
                                        seed=config.seed)

    callbacks: List[keras.callbacks.Callback] = []
    if config.uses_dp_optimizer and track_privacy:
        # With a target, stop before an epoch would exceed it. Only for the regular schedule:
        # the callback projects the next epoch as all-noisy, which the random one is not.
        callbacks.append(tfdp.accounting.PrivacyCallback(
            units, delta=config.delta, sampling=config.sampling, verbose=0,
            # Stated, not read from the in-memory largest batch: a resumed run needs it.
            batch_size=config.batch_size,
            privacy_unit=config.privacy_unit, accountant=config.accountant,
            target_epsilon=(config.target_epsilon
                            if config.noise_schedule == NoiseSchedule.REGULAR else None),
        ))
    epoch_log = EpochLog(config, optimizer, log)
    callbacks.append(epoch_log)
    initial_epoch = 0
    if config.model_dir:
        initial_epoch, saver = checkpoint.open_model_dir(config, model, optimizer, log)
        callbacks.append(saver)
        if initial_epoch:
            # The noise and the batches come from secret randomness, which no seed reaches;
            # the public randomness (dropout, augmentation) also takes a stream of its own.
            keras.utils.set_random_seed(checkpoint.resume_seed(config.seed, initial_epoch))

    # None unless the run opted in to reproducible (insecure) sampling; fresh after a resume.
    insecure_seed = methods.insecure_run_seed(config, initial_epoch)
    steps_per_epoch = None
    if config.bands is not None:
        # Cyclic Poisson over the bands' folds (a fresh secret fold key per process), step t
        # taking fold t mod b from the optimizer's ledger step on: epochs are whole cycles,
        # so a resumed run continues the cycle (and restarts the noise recurrence).
        steps_per_epoch = methods.steps_per_epoch(config, units)
        train_batches = fit_data.cyclic_poisson_batches(
            config.batch_size, config.bands,
            num_steps=steps_per_epoch * max(config.epochs - initial_epoch, 1),
            first_step=int(optimizer.iterations.numpy()),
            insecure_reproducible_seed=insecure_seed)
    elif config.per_patient or (config.sampling == Sampling.POISSON and config.is_private):
        sampler = dict(insecure_reproducible_seed=insecure_seed)
        if config.per_patient:
            sampler.update(groups=data.groups_train,
                           max_examples_per_group=config.max_examples_per_patient)
        # Every remaining epoch in one pass, `steps_per_epoch` at a time: one input pipeline
        # for the whole fit instead of one per epoch (each costs tens of milliseconds, most of
        # an epoch of a few steps). The steps and their sampling are the same.
        steps_per_epoch = steps_from_epochs(1.0, units, config.batch_size)
        train_batches = fit_data.poisson_batches(
            config.batch_size, num_steps=steps_per_epoch * max(config.epochs - initial_epoch, 1),
            **sampler)
    else:
        train_batches = fit_data.train_batches(
            config.batch_size, insecure_reproducible_seed=insecure_seed)
    if not config.uses_dp_optimizer:
        train_batches = methods.augmented_batches(config, train_batches, data.input_shape)
    patients = f"{units} patients, " if config.per_patient else ""
    log(f"{config.method_name()} on {data.name} ({patients}{data.num_train} train / "
        f"{data.num_test} test, "
        f"input {data.input_shape}, {data.num_classes} classes), model {model.name}, "
        f"{config.epochs} epochs of batch {config.batch_size}"
        + (f", noise multiplier {config.noise_multiplier:.4g}" if config.noise_multiplier
           else "") + (f", gamma {config.gamma:g}" if config.gamma else "")
        + (f"; {config.recipe_description()}" if config.recipe_description() else "")
        + ("; the frozen layers' features computed once, the head trained on them"
           if split is not None else ""))
    if initial_epoch < config.epochs:
        # shuffle=False: the batches come shuffled or Poisson-sampled from tfdp.data already.
        fit_model.fit(train_batches, epochs=config.epochs, initial_epoch=initial_epoch,
                      steps_per_epoch=steps_per_epoch,
                      validation_data=fit_data.test_batches() if validate else None,
                      callbacks=callbacks, verbose=verbose, shuffle=False)
    else:
        log(f"--model_dir already holds {initial_epoch} epochs (>= --epochs={config.epochs}); "
            "evaluating without training.")
        # fit would have ended by writing the weights' moving average into the model.
        optimizer.finalize_variable_values(model.trainable_variables)
    return TrainedModel(config=config, model=model, epoch_log=epoch_log)


def _frozen_split(config: RunConfig, model: keras.Model, data: "tfdp.data.Dataset"
                  ) -> Optional[FrozenSplit]:
    """The model's frozen prefix and trainable head, when its features can be cached.

    Not with augmentation: the extractor then sees new inputs at every step.
    """
    if config.augmentation != "none":
        return None
    return split_frozen_prefix(model, sample=data.x_train)


def train_and_evaluate(
    config: RunConfig,
    data: Optional["tfdp.data.Dataset"] = None,
    *,
    log: Callable[[str], None] = print,
    verbose: int = 0,
    validate: bool = True,
) -> RunResult:
    """Trains as configured, evaluates on the test split, accounts, attacks and exports.

    Args:
      config: the run's settings (validated here with `config.validated()`).
      data: an already loaded `tfdp.data.Dataset` (otherwise `load_data(config)`).
      log: where progress lines go.
      verbose: Keras's own progress output (0: only the run's lines).
      validate: measure the test split after every epoch too (for the epoch lines; the
        final test metrics are computed either way).

    Returns:
      A `RunResult` (its `to_dict()` is the metrics JSON record). With
      `config.attack_types`, membership inference (train vs test split) and the
      audit of its bound against the privacy record; with `config.export_dir`, a
      SavedModel with the privacy record attached.

    Raises:
      ValueError: bad settings, or a model_dir holding a run with other privacy settings.
    """
    config = config.validated()
    if data is None:
        data = load_data(config)
    data = patient_data(config, data, log)
    trained = train_model(config, data, log=log, verbose=verbose, validate=validate)
    config, model, optimizer, epoch_log = (trained.config, trained.model, trained.optimizer,
                                           trained.epoch_log)

    failed = diverged(model, data)
    if failed:
        # The epsilon of the steps taken still holds; there is no model to measure or attack.
        log(f"Training diverged: the model's outputs are NaN or infinite (learning rate "
            f"{config.learning_rate:g}); its utility is reported as nan. Lower the learning "
            "rate or the noise.")
        utility = {key: float("nan") for key in UTILITY_KEYS}
    else:
        utility = evaluate_utility(model, data)
    privacy = recipe.with_hyperparameter_paragraph(
        methods.privacy_record(config, optimizer, num_units(config, data)), config, model)
    if config.per_patient:
        privacy = dataclasses.replace(privacy, statement=with_paragraph(
            privacy.statement, unit_paragraph(config, data)))
    if config.backbone is not None:
        privacy = dataclasses.replace(privacy, statement=with_paragraph(
            privacy.statement, methods.backbone_paragraph(config)))
    seconds = [h["seconds"] for h in epoch_log.history]
    result = RunResult(
        config=config, method=config.method_name(), dataset=data.summary(), model=model,
        privacy=privacy, ledger=methods.step_counts(config, optimizer), utility=utility,
        history=epoch_log.history,
        seconds_per_epoch=float(np.mean(seconds)) if seconds else None,
    )
    log(f"Test: accuracy={utility['accuracy']:.4f} precision={utility['precision']:.4f} "
        f"recall={utility['recall']:.4f} f1={utility['f1']:.4f}")
    claimed = getattr(privacy, "epsilon_claimed", None)
    claim = ("" if claimed is None else
             f" epsilon_claimed={format_epsilon(claimed)} ({privacy.epsilon_claimed_by}).")
    log(f"Privacy: epsilon={format_epsilon(privacy.epsilon)} (delta={config.delta}).{claim} "
        f"{privacy.statement}")
    if config.attack_types and not failed:
        result.attack_report, result.audit = attack(result, data)
    if config.export_dir:
        result.export_path = exporting.export_trained(config, model, privacy, log)
    return result


def attack(result: RunResult, data: "tfdp.data.Dataset") -> tuple:
    """Membership inference on the train (members) vs test split, and its audit.

    The audit's bound is delta-aware and holds jointly over all thresholds (95%); the
    attack library's own bound (per threshold, delta = 0) is optimistic and kept in the
    report for reference. Returns (AttackReport, AuditResult).
    """
    config = result.config
    report = tfdp.attacks.membership_inference(
        result.model, (data.x_train, data.y_train), (data.x_test, data.y_test),
        attack_types=list(config.attack_types), slicing=None, seed=config.seed)
    return report, tfdp.attacks.audit(report, result.privacy.to_dict())
