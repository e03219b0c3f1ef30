"""Command-line conventions shared by the scripts."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator, List, Optional

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
ONEDNN_MESSAGE = (
    "tfdp: oneDNN turned on (TF_ENABLE_ONEDNN_OPTS=1; set TF_ENABLE_ONEDNN_OPTS=0 to keep "
    "TensorFlow's default)"
)


def argv_with_helpful() -> List[str]:
    """`sys.argv` with `--helpful` (the documented way to list flags) read as absl's `--helpfull`."""
    return ["--helpfull" if arg == "--helpful" else arg for arg in sys.argv]


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Sends what native code writes to file descriptor 2 to /dev/null while active."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def enable_onednn_unless_set() -> Optional[str]:
    """Turns TensorFlow's oneDNN CPU kernels on for this process unless the user chose already.

    TensorFlow enables oneDNN by itself only on some Intel CPUs; elsewhere (AMD) it stays off,
    and DP training then runs about 2-4x slower. When `TF_ENABLE_ONEDNN_OPTS` is unset this sets
    it to "1" and returns the one line saying so, for the caller to print once; when the user
    set it (to anything), or TensorFlow is already imported (too late to change it), it
    changes nothing and returns None. Child processes inherit the setting. `import tfdp` never
    calls this: only the command-line scripts do, before importing TensorFlow.
    """
    if ONEDNN_VARIABLE in os.environ or "tensorflow" in sys.modules:
        return None
    os.environ[ONEDNN_VARIABLE] = "1"
    return ONEDNN_MESSAGE


def _import_tensorflow() -> None:
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    tf.config.list_physical_devices()


def quiet_tensorflow_startup() -> None:
    """Imports TensorFlow without its native start-up log lines, before a script prints anything.

    TensorFlow's C++ logging writes straight to stderr before `TF_CPP_MIN_LOG_LEVEL` is read
    (the absl notice, the oneDNN notice, CUDA driver probing and `cuInit` failures on a CPU
    machine). Those lines are silenced for the import and the device discovery only; every
    later warning or error, and any import error's traceback, shows as usual.

    First, `enable_onednn_unless_set()`: oneDNN is turned on (one line on stderr says so)
    unless `TF_ENABLE_ONEDNN_OPTS` is set. Once TensorFlow is imported this does nothing.
    """
    if "tensorflow" in sys.modules:
        return
    message = enable_onednn_unless_set()
    if message:
        print(message, file=sys.stderr, flush=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _native_stderr_silenced():
        _import_tensorflow()


# The training recipe's flags, shared by train.py and compare.py (RunConfig field names).
RECIPE_FLAGS = ("learning_rate_schedule", "ema_momentum", "augmentation",
                "augmentation_multiplicity", "physical_batch_size")


def define_recipe_flags(defaults) -> None:
    """Defines the recipe flags with `defaults` (a RunConfig) as their default values."""
    from absl import flags

    from tfdp.run import config as run_config
    from tfdp.training.augmentation import AUGMENTATIONS

    flags.DEFINE_enum("learning_rate_schedule", defaults.learning_rate_schedule,
                      run_config.LEARNING_RATE_SCHEDULES,
                      "constant, or cosine decay to 0 over the planned steps.")
    flags.DEFINE_float("ema_momentum", defaults.ema_momentum,
                       "Evaluate and export the moving average of the weights with this "
                       "momentum (e.g. 0.9; post-processing, no privacy cost). Unset: the last "
                       "weights.")
    flags.DEFINE_enum("augmentation", defaults.augmentation, list(AUGMENTATIONS),
                      "; ".join(f"{k}: {v}" for k, v in AUGMENTATIONS.items()) + ".")
    flags.DEFINE_integer("augmentation_multiplicity", defaults.augmentation_multiplicity,
                         "K augmented copies of each example whose mean gradient is clipped "
                         "once (the sensitivity stays one example's).")
    flags.DEFINE_integer("physical_batch_size", defaults.physical_batch_size,
                         "At most this many examples through the model at once; a larger "
                         "batch is accumulated and noised once per step.")


def define_privacy_unit_flags(defaults) -> None:
    """Defines --privacy_unit and --max_examples_per_patient (defaults from a RunConfig)."""
    from absl import flags

    from tfdp.run import config as run_config

    flags.DEFINE_enum("privacy_unit", defaults.privacy_unit, run_config.PRIVACY_UNITS,
                      "What epsilon protects: one example, or one patient (all of a patient's "
                      "examples: patients are sampled, --batch_size counts patients, and each "
                      "patient's mean gradient is clipped once). Patient ids come from the "
                      "data (chest X-ray file names); digits get synthetic pseudo-patients.")
    flags.DEFINE_integer("max_examples_per_patient", defaults.max_examples_per_patient,
                         "--privacy_unit=patient: at most this many of a patient's examples "
                         "per step (fixed in advance; default: all).")


def define_accountant_flag(defaults) -> None:
    """Defines --accountant (default from a RunConfig): calibration and reported epsilon."""
    from absl import flags

    from tfdp.run import config as run_config

    flags.DEFINE_enum("accountant", defaults.accountant, run_config.ACCOUNTANTS,
                      "How the DP-SGD methods' epsilon is computed, for the calibration to "
                      "--target_epsilon and the reported figure alike: pld (privacy loss "
                      "distributions, the tighter bound) or rdp (Renyi DP; Gaussian only).")


def define_randomness_flags(defaults) -> None:
    """Defines --insecure_reproducible_seed and --floating_point_safe_noise (RunConfig defaults)."""
    from absl import flags

    flags.DEFINE_bool(
        "floating_point_safe_noise", defaults.floating_point_safe_noise,
        "Add the DP noise on a fine grid (discrete Gaussian, or floor of Laplace) instead of "
        "textbook floating-point noise, whose low-order bits can leak the clipped sum; the "
        "same epsilon, a higher cost per step.")
    flags.DEFINE_integer(
        "insecure_reproducible_seed", defaults.insecure_reproducible_seed,
        "For research and tests only: make the DP noise and the batch sampling reproducible "
        "from this seed. Anyone who knows it can replay them, so the guarantee then holds "
        "only against someone who does not; the statement and the records say so. Unset "
        "(the default): both come from the operating system's entropy.")


def define_banded_mf_flags(defaults) -> None:
    """Defines --bands and --strategy_optimization (--mechanism=banded_mf; RunConfig defaults)."""
    from absl import flags

    flags.DEFINE_integer(
        "bands", defaults.bands,
        "--mechanism=banded_mf: b, the banded strategy's diagonals and the cyclic Poisson "
        "folds (e.g. 4; batch_size * bands must not exceed the training examples).")
    flags.DEFINE_bool(
        "strategy_optimization", defaults.strategy_optimization,
        "--mechanism=banded_mf: optimize the strategy's coefficients for the run's length "
        "(default: the truncated square root of the prefix sums).")


def define_backbone_flags(defaults) -> None:
    """Defines --backbone, --backbone_weights, --fine_tune, --fine_tune_blocks, --lora_rank."""
    from absl import flags

    from tfdp.models.backbones import BACKBONES
    from tfdp.training.fine_tuning import FINE_TUNE_MODES

    flags.DEFINE_enum("backbone", defaults.backbone, list(BACKBONES),
                      "A keras.applications backbone under a DP Dense head (with --model=auto); "
                      "grayscale images are repeated to three channels.")
    flags.DEFINE_string("backbone_weights", defaults.backbone_weights,
                        "The backbone's pretrained weights: a LOCAL file, keras.applications' "
                        "'no top' .h5 (nothing is downloaded; a missing file's error gives its "
                        "URL). Unset: random weights, NOT pretrained (the run says so).")
    flags.DEFINE_enum("fine_tune", defaults.fine_tune, list(FINE_TUNE_MODES),
                      "head: the backbone frozen (its features computed once); last_blocks: "
                      "its last --fine_tune_blocks blocks train too; lora: those blocks train "
                      "through LoRA of rank --lora_rank. BatchNormalization stays frozen.")
    flags.DEFINE_integer("fine_tune_blocks", defaults.fine_tune_blocks,
                         "--fine_tune=last_blocks|lora: how many of the last blocks train.")
    flags.DEFINE_integer("lora_rank", defaults.lora_rank, "--fine_tune=lora: LoRA's rank.")


def define_training_metrics_flag(defaults) -> None:
    """Defines --record_training_metrics (default from a RunConfig: off)."""
    from absl import flags

    flags.DEFINE_bool(
        "record_training_metrics", defaults.record_training_metrics,
        "Record each epoch's training loss and accuracy in the progress lines and the metrics "
        "JSON. They are computed from the private training batches without noise, so they "
        "are NOT covered by the DP guarantee (the record says so). Off: only the test "
        "split's metrics and epsilon.")


def recipe_values(flag_values) -> dict:
    """{RunConfig field: value} of the parsed recipe flags."""
    return {name: flag_values[name].value for name in RECIPE_FLAGS}
