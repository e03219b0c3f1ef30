"""Compare the dynamic-DP paper's five methods and two others side by side on one data set.

    .venv/bin/python scripts/compare.py                      # bundled digits, a few minutes

Trains No-DP, Gaussian RegN-DP-SGD, Gaussian RanN-DP-SGD, Laplace RegN-DP-SGD and
Laplace RanN-DP-SGD on the same data, model, seeds and hyperparameters, plus
residual perturbation (a ResNet with noise of scale `--gamma` on every residual
branch; not calibrated to a budget) and NeuralDP (its own model with one privatized
layer; calibrated to the withdrawn preprint's claimed epsilon), at a shared
privacy budget (`--target_epsilon`: each private method's noise is calibrated to
reach it), attacks each trained model with membership inference, and sweeps the
budget (`--sweep_epsilons`) to draw privacy-utility curves. Writes to `--output_dir`:

    comparison.csv / comparison.json   the table at --target_epsilon (json: also every run)
    sweep.csv                          one row per method and swept target epsilon
    privacy_utility.png                accuracy and attack AUC against epsilon
    lira_roc.png                       LiRA's ROC curve per method, log-log (low FPR)

Epsilon columns: `epsilon` is the formal (epsilon, delta)-DP guarantee, "inf" where
there is none (No-DP; the random schedule releasing noiseless steps).
`epsilon_noisy_steps_only` is the paper's convention for the random schedule
(composition over the noisy steps only): NOT a guarantee when noiseless steps are
released. `epsilon_claimed` is NeuralDP's figure as its withdrawn preprint argues:
NOT a guarantee (residual perturbation and NeuralDP have epsilon = inf).
`epsilon_lower_bound` is what the attacks prove empirically. Every method is also attacked
with LiRA (`lira_*` columns; `--lira_shadows`) and audited in one run with canaries
(`audit_epsilon_lower_bound`, `..._whitebox`; `--audit_canaries`); `--quick` cuts both and
the sweep for a first look.
"""

from __future__ import annotations

import os
import sys
from typing import List, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

if __package__:  # tfdp.scripts.<name>: an installed console script, or python -m
    from tfdp.scripts import _cli
else:  # python scripts/<name>.py: Python puts scripts/ first on sys.path
    import _cli  # noqa: E402

_cli.quiet_tensorflow_startup()

from absl import app, flags  # noqa: E402
from absl import logging as absl_logging  # noqa: E402

from tfdp import mechanisms  # noqa: E402
from tfdp.run import OPTIMIZERS, RESIDUAL_NOISE, SAMPLINGS, RunConfig  # noqa: E402
from tfdp.run.comparison import METHOD_SETTINGS, CompareConfig, compare  # noqa: E402
from tfdp.run.leakage import CANARY_KINDS, LeakageConfig  # noqa: E402

FLAGS = flags.FLAGS
# --quick: the leakage measurements at a glance (a few minutes on 2 cores).
QUICK_SHADOWS = 6  # with fewer, over 5% of the pairs lack an in or out shadow: offline LiRA
QUICK_CANARIES = 500
# The flags' defaults are the library's (the settings of `make demo`), defined there once.
_DEFAULTS = CompareConfig()


def define_flags() -> None:
    """Defines this script's absl flags (defaults: the library's CompareConfig, `make demo`)."""
    d, base = _DEFAULTS, _DEFAULTS.base
    flags.DEFINE_list("methods", list(d.methods),
                      "Methods to compare: " + ", ".join(METHOD_SETTINGS))
    flags.DEFINE_float("target_epsilon", d.target_epsilon, "Shared budget of the main table: each "
                       "private method's noise is calibrated to reach it (RanN: over its expected "
                       "noisy steps).")
    flags.DEFINE_float("noise_multiplier", None, "Instead of --target_epsilon: the same noise "
                       "multiplier for every private method (disables the sweep).")
    flags.DEFINE_list("sweep_epsilons", [str(e) for e in d.sweep_epsilons],
                      "Target epsilons of the privacy-utility curves (empty: no sweep).")
    flags.DEFINE_float("noise_probability", d.noise_probability,
                       "p of the RanN methods' noise coin.")
    flags.DEFINE_enum("on_skip", str(d.on_skip), mechanisms.values(mechanisms.OnSkip),
                      "RanN noiseless steps: release (the paper; no formal DP) or drop.")
    flags.DEFINE_integer("seeds", d.seeds,
                         "Repeat every run with this many seeds (mean and spread).")
    flags.DEFINE_integer("seed", d.seed, "First seed.")
    flags.DEFINE_list("attack_types", list(d.attack_types),
                      "Membership-inference attacks (threshold, threshold-entropy, lr, mlp, rf, "
                      "knn); 'none' to skip.")
    flags.DEFINE_string("output_dir", d.output_dir, "Where the table and plot go.")
    flags.DEFINE_float("gamma", d.gamma, "Residual perturbation: noise scale on every residual "
                       "branch (the method runs once, at this gamma).")
    flags.DEFINE_enum("residual_noise", d.residual_noise, RESIDUAL_NOISE,
                      "Residual perturbation: additive or multiplicative noise.")
    flags.DEFINE_float("activation_clip_norm", d.activation_clip_norm, "NeuralDP: per-example L2 "
                       "clip of the privatized activations.")
    flags.DEFINE_string("dataset", base.dataset, "Data set (as in train.py).")
    flags.DEFINE_string("data_dir", None, "Folder of the data set (not for the bundled ones).")
    flags.DEFINE_integer("image_size", None, "Resize images to this many pixels per side.")
    flags.DEFINE_integer("split_seed", base.split_seed, "Seed of the train/test split.")
    flags.DEFINE_string("model", base.model, "Model (as in train.py).")
    flags.DEFINE_integer("epochs", base.epochs, "Epochs per run.")
    flags.DEFINE_integer("batch_size", base.batch_size,
                         "Batch size (expected size under Poisson sampling).")
    flags.DEFINE_float("learning_rate", base.learning_rate, "Learning rate.")
    flags.DEFINE_enum("optimizer", base.optimizer, OPTIMIZERS, "Base optimizer.")
    flags.DEFINE_float("l2_norm_clip", 1.0, "Per-example L2 clip of the Gaussian methods.")
    flags.DEFINE_float("l1_norm_clip", 1.0, "Per-example L1 clip of the Laplace methods.")
    flags.DEFINE_float("delta", base.delta, "Delta of (epsilon, delta)-DP.")
    flags.DEFINE_enum("sampling", str(base.sampling), SAMPLINGS, "Batch sampling (as in train.py).")
    flags.DEFINE_integer("max_train_examples", None, "Use at most this many training examples.")
    flags.DEFINE_integer("max_test_examples", None, "Use at most this many test examples.")
    _cli.define_recipe_flags(base)
    _cli.define_privacy_unit_flags(base)
    _cli.define_accountant_flag(base)
    _cli.define_randomness_flags(base)
    _cli.define_training_metrics_flag(base)
    _cli.define_banded_mf_flags(base)
    leak = d.leakage
    flags.DEFINE_integer("lira_shadows", leak.lira_shadows, "LiRA: shadow models per method "
                         "(each trained the method's own way; 0: no LiRA).")
    flags.DEFINE_integer("audit_canaries", leak.audit_canaries, "One-run audits (black-box and, "
                         "for DP-SGD, white-box): canaries per audit (0: no audit).")
    flags.DEFINE_enum("canary_kind", leak.canary_kind, list(CANARY_KINDS),
                      "Black-box audit canaries: noise (random inputs and labels) or mislabeled.")
    flags.DEFINE_bool("quick", False, f"A fast look: no epsilon sweep, {QUICK_SHADOWS} LiRA shadow "
                      f"models and {QUICK_CANARIES} canaries (unless those flags are given).")
    flags.DEFINE_bool("verbose", False, "Print every run's epoch lines.")


def _floats(name: str, values: Sequence[str]) -> List[float]:
    """The numbers of a list flag (blank items skipped: --sweep_epsilons= is an empty list)."""
    try:
        return [float(v) for v in values if str(v).strip()]
    except ValueError:
        raise ValueError(f"--{name} must be a comma-separated list of numbers, got "
                         f"{','.join(values)!r}.") from None


def config_from_flags() -> CompareConfig:
    """The validated CompareConfig the parsed flags describe."""
    base = RunConfig(
        dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, image_size=FLAGS.image_size,
        split_seed=FLAGS.split_seed, model=FLAGS.model, epochs=FLAGS.epochs,
        batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate,
        optimizer=FLAGS.optimizer, l2_norm_clip=FLAGS.l2_norm_clip,
        l1_norm_clip=FLAGS.l1_norm_clip, delta=FLAGS.delta, sampling=FLAGS.sampling,
        max_train_examples=FLAGS.max_train_examples, max_test_examples=FLAGS.max_test_examples,
        max_examples_per_patient=FLAGS.max_examples_per_patient, accountant=FLAGS.accountant,
        insecure_reproducible_seed=FLAGS.insecure_reproducible_seed,
        floating_point_safe_noise=FLAGS.floating_point_safe_noise,
        record_training_metrics=FLAGS.record_training_metrics,
        bands=FLAGS.bands, strategy_optimization=FLAGS.strategy_optimization,
        **_cli.recipe_values(FLAGS),
    )
    attacks = [a for a in FLAGS.attack_types if a.strip()]
    noise_multiplier = FLAGS.noise_multiplier
    # A fixed --noise_multiplier replaces the default target and sweep (given ones still clash).
    target = None if noise_multiplier is not None and FLAGS["target_epsilon"].using_default_value \
        else FLAGS.target_epsilon
    sweep = _floats("sweep_epsilons", FLAGS.sweep_epsilons)
    if noise_multiplier is not None and FLAGS["sweep_epsilons"].using_default_value:
        sweep = []
    shadows, canaries = FLAGS.lira_shadows, FLAGS.audit_canaries
    if FLAGS.quick:  # only the defaults give way: a flag given explicitly still counts
        if FLAGS["sweep_epsilons"].using_default_value:
            sweep = []
        if FLAGS["lira_shadows"].using_default_value:
            shadows = QUICK_SHADOWS
        if FLAGS["audit_canaries"].using_default_value:
            canaries = QUICK_CANARIES
    return CompareConfig(
        methods=tuple(FLAGS.methods), target_epsilon=target, noise_multiplier=noise_multiplier,
        sweep_epsilons=tuple(sweep), noise_probability=FLAGS.noise_probability,
        on_skip=FLAGS.on_skip, seeds=FLAGS.seeds, seed=FLAGS.seed,
        attack_types=None if attacks in ([], ["none"]) else tuple(attacks),
        output_dir=FLAGS.output_dir, gamma=FLAGS.gamma, residual_noise=FLAGS.residual_noise,
        activation_clip_norm=FLAGS.activation_clip_norm, base=base,
        privacy_unit=FLAGS.privacy_unit,
        leakage=LeakageConfig(lira_shadows=shadows, audit_canaries=canaries,
                              canary_kind=FLAGS.canary_kind),
    ).validated()


def main(argv: List[str]) -> None:
    """Entry point: run the comparison and write the table and plot."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not FLAGS.verbose:
        absl_logging.set_verbosity(absl_logging.WARNING)  # the attack library logs every attack
    try:
        compare(config_from_flags(), verbose=FLAGS.verbose)
    except ValueError as error:
        sys.exit(f"compare.py: error: {error}")


def cli() -> None:
    """Entry point of `python scripts/<name>.py` and of the `tfdp-compare` console script."""
    define_flags()
    app.run(main, argv=_cli.argv_with_helpful())


if __name__ == "__main__":
    cli()
