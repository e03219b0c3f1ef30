"""`RunConfig`: every setting of one training run, checked once, frozen after that.

The run-level method names (No-DP, the DP-SGD noise mechanisms, and the two other
methods without a formal guarantee) and the base optimizer names are defined here,
once; the mechanism, schedule, on-skip and sampling names come from tfdp.mechanisms.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Tuple

from tfdp import mechanisms
from tfdp.accounting.epsilon import check_delta
from tfdp._validation import check_choice, check_positive, check_positive_int, check_probability
from tfdp.layers.residual_perturbation import NOISE_KINDS
from tfdp.training.augmentation import augmentation_names

NO_DP = mechanisms.NO_NOISE
# The DP-SGD noise mechanisms (a tfdp DP optimizer, its ledger and accountant).
DP_SGD_MECHANISMS: Tuple[str, ...] = tuple(mechanisms.mechanism_names())
RESIDUAL_PERTURBATION = "residual_perturbation"
NEURALDP = "neuraldp"
# Trained with an ordinary optimizer; no formal guarantee (tfdp.accounting.other_methods).
OTHER_METHODS: Tuple[str, ...] = (RESIDUAL_PERTURBATION, NEURALDP)
# Every value of --mechanism: No-DP, the DP-SGD mechanisms, the other methods.
METHODS: Tuple[str, ...] = (NO_DP,) + DP_SGD_MECHANISMS + OTHER_METHODS
MECHANISMS = METHODS  # the flag's historical name
RESIDUAL_NOISE: Tuple[str, ...] = tuple(NOISE_KINDS)
SCHEDULES: Tuple[str, ...] = mechanisms.values(mechanisms.NoiseSchedule)
ON_SKIP: Tuple[str, ...] = mechanisms.values(mechanisms.OnSkip)
SAMPLINGS: Tuple[str, ...] = mechanisms.values(mechanisms.Sampling)
OPTIMIZERS: Tuple[str, ...] = ("sgd", "adam", "adagrad")
ACCOUNTANTS: Tuple[str, ...] = mechanisms.values(mechanisms.Accountant)
# constant: the learning rate throughout; cosine: decays to 0 over the planned steps.
LEARNING_RATE_SCHEDULES: Tuple[str, ...] = ("constant", "cosine")
AUGMENTATIONS: Tuple[str, ...] = augmentation_names()
# What one unit of the guarantee is: an example, or a patient (all of one person's examples).
EXAMPLE, PATIENT = "example", "patient"
PRIVACY_UNITS: Tuple[str, ...] = (EXAMPLE, PATIENT)

_REGULAR = mechanisms.NoiseSchedule.REGULAR.value
_RANDOM = mechanisms.NoiseSchedule.RANDOM.value
_RELEASE = mechanisms.OnSkip.RELEASE.value
_DROP = mechanisms.OnSkip.DROP.value

# Each other method's own settings, and the model it builds (its architecture is the method).
METHOD_FLAGS: Dict[str, Tuple[str, ...]] = {
    RESIDUAL_PERTURBATION: ("gamma", "residual_noise"),
    NEURALDP: ("activation_clip_norm",),
}
METHOD_MODELS: Dict[str, str] = {
    RESIDUAL_PERTURBATION: "residual_perturbation_resnet",
    NEURALDP: "neuraldp",
}
# Settings that fix what the privacy ledger in a model_dir means; a resumed run must keep them.
LEDGER_KEYS: Tuple[str, ...] = (
    "dataset", "data_dir", "split_seed", "max_train_examples", "model", "mechanism",
    "noise_schedule", "noise_probability", "on_skip", "noise_multiplier", "l2_norm_clip",
    "l1_norm_clip", "batch_size", "optimizer", "delta", "sampling", "image_size",
    "gamma", "residual_noise", "activation_clip_norm", "privacy_unit",
    "max_examples_per_patient", "insecure_reproducible_seed", "floating_point_safe_noise",
    "backbone", "fine_tune", "fine_tune_blocks", "lora_rank", "bands",
)
# Local paths: they say nothing about the model or its privacy (kept out of export records).
# backbone_weights is one too: the privacy statement names the file (its name and SHA-256)
# instead, and a resume restores the trained weights from the checkpoint anyway.
PATH_SETTINGS: Tuple[str, ...] = ("model_dir", "export_dir", "metrics_path", "backbone_weights")
# Fine-tuning settings, meaningful only with a backbone: (name, default).
FINE_TUNE_DEFAULTS: Tuple[Tuple[str, Any], ...] = (
    ("fine_tune", "head"), ("fine_tune_blocks", 1), ("lora_rank", 4))


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything one training run needs (scripts/train.py's flags, as data).

    Construct it with any settings, then call `validated()` for the checked,
    defaulted copy the run uses; the object itself is never changed.
    """

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
    # Membership-inference attacks run after training (tfdp.attacks names); None: none.
    attack_types: Optional[Tuple[str, ...]] = None
    # The training recipe. None of these changes the privacy accounting: the EMA of the
    # weights is post-processing, K augmentations are averaged before clipping, physical
    # batches are noised once per logical batch.
    learning_rate_schedule: str = "constant"
    ema_momentum: Optional[float] = None
    augmentation: str = "none"
    augmentation_multiplicity: int = 1
    physical_batch_size: Optional[int] = None
    # The privacy unit. "patient": patients are sampled (batch_size counts patients) and each
    # patient's mean gradient is clipped, so epsilon is per patient (user-level DP). The ids
    # come from the data (file names), or are synthetic where the source has none (digits).
    privacy_unit: str = EXAMPLE
    # At most this many of a patient's examples per step (fixed in advance); None: all.
    max_examples_per_patient: Optional[int] = None
    # The dp_accounting accountant of the DP-SGD mechanisms, for calibration and the reported
    # epsilon alike. Both are upper bounds; PLD's (pessimistic discretization) is the tighter,
    # so the same target needs less noise. RDP reads only Gaussian events.
    accountant: str = "pld"
    # For research and tests only: the noise and the batch sampling reproducible from this
    # seed (with `seed`), so the guarantee holds only against someone who does not know it;
    # the statement, the exported record and compare's table say so. None (the default):
    # both come from the operating system's entropy, which `seed` never reaches.
    insecure_reproducible_seed: Optional[int] = None
    # The DP-SGD noise on a grid (tfdp.randomness.grid): no leak through the low-order bits of
    # floating-point noise, the same accounting, a higher cost per step (see the benchmark).
    floating_point_safe_noise: bool = False
    # The training loss and accuracy of each epoch, computed from the private training
    # batches WITHOUT noise: not covered by the DP guarantee, so off by default (the history,
    # the progress lines and the metrics JSON then hold only test-split figures). True
    # records them, and the record says they are not covered.
    record_training_metrics: bool = False
    # A keras.applications backbone under a DP head (tfdp.models.backbones: resnet50v2,
    # mobilenetv3small, mobilenetv3large, efficientnetv2b0, convnexttiny), with --model=auto.
    backbone: Optional[str] = None
    # Its pretrained weights: a LOCAL file (keras.applications' "no top" .h5); never
    # downloaded. None: random weights, and the run says the backbone is NOT pretrained.
    backbone_weights: Optional[str] = None
    # What of the backbone trains: "head" (nothing: frozen features), "last_blocks" (its last
    # fine_tune_blocks blocks) or "lora" (those blocks through LoRA of rank lora_rank).
    fine_tune: str = "head"
    fine_tune_blocks: int = 1
    lora_rank: int = 4
    # --mechanism=banded_mf: b, the banded strategy's diagonals and the cyclic Poisson folds
    # (batch_size * bands <= training examples); its coefficients the truncated square root
    # of the prefix sums, or optimized for the run's length with strategy_optimization.
    bands: Optional[int] = None
    strategy_optimization: bool = False

    def validated(self) -> "RunConfig":
        """A checked copy with the clip norms defaulted; raises ValueError on bad settings."""
        check_choice("mechanism", self.mechanism, METHODS)
        check_choice("noise_schedule", self.noise_schedule, SCHEDULES)
        check_choice("on_skip", self.on_skip, ON_SKIP)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("sampling", self.sampling, SAMPLINGS)
        check_choice("learning_rate_schedule", self.learning_rate_schedule,
                     LEARNING_RATE_SCHEDULES)
        check_choice("augmentation", self.augmentation, AUGMENTATIONS)
        check_choice("accountant", self.accountant, ACCOUNTANTS)
        _check_recipe(self)
        _check_privacy_unit(self)
        _check_backbone(self)
        _check_banded(self)
        common: Dict[str, Any] = dict(
            noise_probability=check_probability("noise_probability", self.noise_probability),
            batch_size=check_positive_int("batch_size", self.batch_size),
            epochs=check_positive_int("epochs", self.epochs),
            learning_rate=check_positive("learning_rate", self.learning_rate),
            delta=check_delta(self.delta),
        )
        if self.attack_types is not None:
            common["attack_types"] = tuple(self.attack_types)
        misplaced = [k for k in ("gamma", "residual_noise", "activation_clip_norm")
                     if getattr(self, k) is not None
                     and k not in METHOD_FLAGS.get(self.mechanism, ())]
        if misplaced:
            owners = {k: m for m, keys in METHOD_FLAGS.items() for k in keys}
            raise ValueError(", ".join(f"--{k} belongs to --mechanism={owners[k]}" for k in misplaced)
                             + f"; drop it with --mechanism={self.mechanism}.")
        c = dataclasses.replace(self, **common)
        if c.mechanism in OTHER_METHODS:
            return dataclasses.replace(c, **_other_method_settings(c))
        if c.mechanism == NO_DP:
            _check_no_dp(c)
            return c
        return dataclasses.replace(c, **_dp_sgd_settings(c))

    def resolved(self) -> "RunConfig":
        """Alias of `validated()` (its earlier name)."""
        return self.validated()

    @property
    def is_private(self) -> bool:
        """True when a privacy method is used (DP-SGD noise, residual perturbation, NeuralDP)."""
        return self.mechanism != NO_DP

    @property
    def uses_dp_optimizer(self) -> bool:
        """True for the DP-SGD mechanisms: a tfdp DP optimizer, its ledger and accountant."""
        return self.mechanism in DP_SGD_MECHANISMS

    @property
    def per_patient(self) -> bool:
        """True when the privacy unit is a patient (user-level DP)."""
        return self.privacy_unit == PATIENT

    @property
    def has_formal_guarantee(self) -> bool:
        """False for No-DP, the other methods, and the random schedule releasing noiseless steps."""
        if not self.uses_dp_optimizer:
            return False
        return not (self.noise_schedule == _RANDOM and self.on_skip == _RELEASE
                    and self.noise_probability < 1.0)

    def recipe_description(self) -> str:
        """The recipe in words ("" for none), e.g. "cosine lr, EMA 0.95, shift x4"."""
        parts = []
        if self.learning_rate_schedule != "constant":
            parts.append(f"{self.learning_rate_schedule} lr")
        if self.ema_momentum is not None:
            parts.append(f"EMA {self.ema_momentum:g}")
        if self.augmentation != "none":
            parts.append(self.augmentation + (f" x{self.augmentation_multiplicity}"
                                              if self.augmentation_multiplicity > 1 else ""))
        if self.physical_batch_size:
            parts.append(f"physical batches of {self.physical_batch_size}")
        return ", ".join(parts)

    def method_name(self) -> str:
        """The paper's name of the method (e.g. "Gaussian RanN-DP-SGD")."""
        if not self.is_private:
            return "No-DP"
        if self.mechanism == RESIDUAL_PERTURBATION:
            return "Residual perturbation" + (
                " (multiplicative)" if self.residual_noise == "multiplicative" else "")
        if self.mechanism == NEURALDP:
            return "NeuralDP"
        if self.mechanism == BANDED_MF:
            return f"Gaussian banded-MF DP-SGD (b={self.bands})"
        schedule = "RanN" if self.noise_schedule == _RANDOM else "RegN"
        drop = " (drop)" if self.noise_schedule == _RANDOM and self.on_skip == _DROP else ""
        unit = " per patient" if self.per_patient else ""
        return f"{mechanisms.get_mechanism(self.mechanism).title} {schedule}-DP-SGD{drop}{unit}"


TrainConfig = RunConfig  # the name scripts/train.py gave it


BANDED_MF = "banded_mf"


def _check_banded(c: RunConfig) -> None:
    """--bands / --strategy_optimization: required by / only for --mechanism=banded_mf."""
    if c.mechanism != BANDED_MF:
        if c.bands is not None or c.strategy_optimization:
            raise ValueError("--bands and --strategy_optimization are for "
                             f"--mechanism=banded_mf; drop them with --mechanism={c.mechanism}.")
        return
    if c.bands is None:
        raise ValueError(
            "--mechanism=banded_mf needs --bands (the strategy's diagonals and cyclic Poisson "
            "folds), e.g. --bands=4; --batch_size * --bands must not exceed the training "
            "examples.")
    check_positive_int("bands", c.bands)
    if c.sampling != mechanisms.Sampling.POISSON.value:
        raise ValueError("--mechanism=banded_mf is accounted under cyclic Poisson sampling, "
                         "which the run draws with --sampling=poisson: use it.")
    if c.noise_schedule != _REGULAR:
        raise ValueError("--mechanism=banded_mf adds noise at every step: use "
                         "--noise_schedule=regular.")
    if c.privacy_unit != EXAMPLE:
        raise ValueError("--mechanism=banded_mf draws its folds per example: use "
                         "--privacy_unit=example (or --mechanism=gaussian per patient).")
    if c.floating_point_safe_noise:
        raise ValueError("--floating_point_safe_noise is not available with "
                         "--mechanism=banded_mf (the grid noise is not correlated): drop it.")


def _check_recipe(c: RunConfig) -> None:
    """The recipe's settings: EMA momentum in [0, 1), K >= 1 with an augmentation."""
    if c.ema_momentum is not None and not 0.0 <= c.ema_momentum < 1.0:
        raise ValueError(f"--ema_momentum must be in [0, 1) (e.g. 0.9), got {c.ema_momentum}; "
                         "leave it unset for no weight averaging.")
    multiplicity = check_positive_int("augmentation_multiplicity", c.augmentation_multiplicity)
    if multiplicity > 1 and c.augmentation == "none":
        raise ValueError(f"--augmentation_multiplicity={multiplicity} averages that many "
                         "augmented copies of each example: choose an --augmentation "
                         f"({', '.join(a for a in AUGMENTATIONS if a != 'none')}).")
    if c.physical_batch_size is not None:
        check_positive_int("physical_batch_size", c.physical_batch_size)
    if (multiplicity > 1 or c.physical_batch_size) and c.mechanism in OTHER_METHODS:
        raise ValueError(f"--augmentation_multiplicity and --physical_batch_size belong to "
                         f"DP-SGD's per-example clipping; --mechanism={c.mechanism} does not "
                         "clip examples.")


def _check_backbone(c: RunConfig) -> None:
    """--backbone with --model=auto and a DP-SGD or No-DP run; the fine-tuning flags with it."""
    from tfdp.models.backbones import BACKBONES  # tfdp.models imports Keras applications
    from tfdp.training.fine_tuning import FINE_TUNE_MODES

    if c.backbone is None:
        given = [k for k, default in FINE_TUNE_DEFAULTS if getattr(c, k) != default]
        if c.backbone_weights is not None:
            given.insert(0, "backbone_weights")
        if given:
            raise ValueError(f"{', '.join('--' + k for k in given)} set(s) up a pretrained "
                             f"backbone: add --backbone={'|'.join(BACKBONES)}, or drop it.")
        return
    check_choice("backbone", c.backbone, tuple(BACKBONES))
    check_choice("fine_tune", c.fine_tune, FINE_TUNE_MODES)
    check_positive_int("fine_tune_blocks", c.fine_tune_blocks)
    check_positive_int("lora_rank", c.lora_rank)
    unused = [k for k in (("fine_tune_blocks", "lora_rank") if c.fine_tune == "head" else
                          ("lora_rank",) if c.fine_tune == "last_blocks" else ())
              if getattr(c, k) != dict(FINE_TUNE_DEFAULTS)[k]]
    if unused:
        raise ValueError(f"{', '.join('--' + k for k in unused)} would do nothing with "
                         f"--fine_tune={c.fine_tune}; drop it, or choose --fine_tune="
                         f"{'lora' if 'lora_rank' in unused else 'last_blocks|lora'}.")
    if c.model != "auto":
        raise ValueError(f"--backbone={c.backbone} builds the model (the backbone under a Dense "
                         f"head): leave --model=auto, got --model={c.model}.")
    if c.mechanism in OTHER_METHODS:
        raise ValueError(f"--mechanism={c.mechanism} trains its own architecture; --backbone "
                         "is for DP-SGD (or --mechanism=none).")


def _check_privacy_unit(c: RunConfig) -> None:
    """--privacy_unit=patient: a DP-SGD mechanism under Poisson sampling; the cap with it only."""
    check_choice("privacy_unit", c.privacy_unit, PRIVACY_UNITS)
    if c.max_examples_per_patient is not None:
        check_positive_int("max_examples_per_patient", c.max_examples_per_patient)
        if c.privacy_unit != PATIENT:
            raise ValueError("--max_examples_per_patient caps a patient's examples per step: "
                             "it needs --privacy_unit=patient.")
    if c.privacy_unit != PATIENT:
        return
    if c.mechanism not in DP_SGD_MECHANISMS:
        raise ValueError(
            f"--privacy_unit=patient samples and clips patients in DP-SGD's train step; "
            f"--mechanism={c.mechanism} has no such step (and no per-patient guarantee). Use "
            f"--mechanism={'|'.join(DP_SGD_MECHANISMS)} or --privacy_unit=example.")
    if c.sampling != mechanisms.Sampling.POISSON.value:
        raise ValueError("--privacy_unit=patient samples patients by Poisson sampling: use "
                         "--sampling=poisson.")


def _check_no_dp(c: RunConfig) -> None:
    """No-DP: no privacy setting may be given (it would silently do nothing)."""
    given = [k for k in ("noise_multiplier", "target_epsilon", "l2_norm_clip", "l1_norm_clip")
             if getattr(c, k) is not None]
    if given:
        raise ValueError(
            f"--mechanism=none trains without privacy, so {', '.join('--' + g for g in given)} "
            "would have no effect; drop them or choose --mechanism=gaussian|laplace."
        )
    if c.noise_schedule != _REGULAR or c.noise_probability != 1.0:
        raise ValueError(
            "--noise_schedule/--noise_probability need a noise mechanism; with "
            "--mechanism=none leave them at their defaults."
        )


def _check_noise_or_target(c: RunConfig) -> Dict[str, Any]:
    """The checked noise_multiplier / target_epsilon (exactly one of them is set)."""
    out: Dict[str, Any] = {}
    if c.noise_multiplier is not None:
        out["noise_multiplier"] = check_positive("noise_multiplier", c.noise_multiplier)
    if c.target_epsilon is not None:
        out["target_epsilon"] = check_positive("target_epsilon", c.target_epsilon)
    return out


def _dp_sgd_settings(c: RunConfig) -> Dict[str, Any]:
    """Checks of a DP-SGD run; returns the defaulted fields (the mechanism's clip norm)."""
    if (c.noise_multiplier is None) == (c.target_epsilon is None):
        raise ValueError(
            "Give exactly one of --noise_multiplier (noise std over the clip) or "
            "--target_epsilon (the noise is then calibrated to reach it)"
            + (", not both." if c.noise_multiplier is not None else ".")
        )
    out = _check_noise_or_target(c)
    if c.noise_schedule == _REGULAR and c.noise_probability != 1.0:
        raise ValueError(
            "--noise_probability applies to --noise_schedule=random; the regular schedule "
            "adds noise at every step."
        )
    if c.noise_schedule == _RANDOM and c.noise_probability == 0.0:
        raise ValueError(
            "--noise_probability=0 never adds noise; use a probability in (0, 1] or "
            "--mechanism=none."
        )
    mechanism = mechanisms.get_mechanism(c.mechanism)
    clip = mechanism.clip_argument
    # Another mechanism's clip norm is refused: this mechanism's noise would not be DP with it.
    for owner in (mechanisms.get_mechanism(n) for n in mechanisms.mechanism_names()):
        wrong = owner.clip_argument
        if wrong == clip or not hasattr(c, wrong) or getattr(c, wrong) is None:
            continue
        if mechanism.clip_kind == "l1":
            raise ValueError(f"{mechanism.title} noise is only DP with L1 clipping: use --{clip} "
                             f"instead of --{wrong}.")
        raise ValueError(f"{mechanism.title} noise needs --{clip}; --{wrong} is for "
                         f"--mechanism={owner.name}.")
    value = getattr(c, clip)
    out[clip] = check_positive(clip, 1.0 if value is None else value)
    if c.accountant not in mechanism.accountants:
        raise ValueError(f"--accountant={c.accountant} cannot account for {mechanism.title} "
                         f"noise; use --accountant={'|'.join(mechanism.accountants)}.")
    return out


def _other_method_settings(c: RunConfig) -> Dict[str, Any]:
    """Checks and defaults of residual perturbation / NeuralDP settings."""
    name = c.mechanism
    if c.noise_schedule != _REGULAR or c.noise_probability != 1.0 or c.on_skip != _RELEASE:
        raise ValueError(f"--noise_schedule, --noise_probability and --on_skip are DP-SGD settings; "
                         f"with --mechanism={name} leave them at their defaults.")
    if c.l2_norm_clip is not None or c.l1_norm_clip is not None:
        raise ValueError(f"--mechanism={name} clips no gradients: drop --l2_norm_clip/--l1_norm_clip"
                         + (" (the activation clip is --activation_clip_norm)."
                            if name == NEURALDP else "."))
    if c.model not in ("auto", METHOD_MODELS[name]):
        raise ValueError(f"--mechanism={name} trains its own model ({METHOD_MODELS[name]}); "
                         f"leave --model=auto, got --model={c.model}.")
    out: Dict[str, Any] = {"model": METHOD_MODELS[name]}
    if name == RESIDUAL_PERTURBATION:
        if c.noise_multiplier is not None or c.target_epsilon is not None:
            raise ValueError(
                "--mechanism=residual_perturbation has no computed epsilon, so nothing can be "
                "calibrated to --target_epsilon, and --noise_multiplier does not apply: set the "
                "noise with --gamma.")
        if c.gamma is None:
            raise ValueError("--mechanism=residual_perturbation needs --gamma, the scale of the "
                             "Gaussian noise added to every residual branch (e.g. 0.5).")
        out["gamma"] = check_positive("gamma", c.gamma)
        out["residual_noise"] = check_choice("residual_noise", c.residual_noise or "additive",
                                             RESIDUAL_NOISE)
        return out
    if (c.noise_multiplier is None) == (c.target_epsilon is None):
        raise ValueError(
            "--mechanism=neuraldp needs exactly one of --noise_multiplier (activation noise std "
            "over --activation_clip_norm) or --target_epsilon (the noise is calibrated so that "
            "the withdrawn preprint's CLAIMED epsilon reaches it; not a guarantee).")
    out.update(_check_noise_or_target(c))
    out["activation_clip_norm"] = check_positive(
        "activation_clip_norm", 1.0 if c.activation_clip_norm is None else c.activation_clip_norm)
    return out
