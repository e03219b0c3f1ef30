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
The run itself is `tfdp.run.train_and_evaluate`; this script maps flags to a
`tfdp.run.RunConfig` and writes the result.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import List

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

if __package__:  # tfdp.scripts.<name>: an installed console script, or python -m
    from tfdp.scripts import _cli
else:  # python scripts/<name>.py: Python puts scripts/ first on sys.path
    import _cli  # noqa: E402

_cli.quiet_tensorflow_startup()

from absl import app, flags  # noqa: E402

from tfdp import models  # noqa: E402
from tfdp import run  # noqa: E402
from tfdp.run import config as run_config  # noqa: E402

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
    flags.DEFINE_enum("mechanism", "gaussian", run_config.METHODS,
                      "Noise mechanism (none = No-DP). residual_perturbation and neuraldp train "
                      "their own model with an ordinary optimizer and have no formal guarantee.")
    flags.DEFINE_enum("noise_schedule", "regular", run_config.SCHEDULES,
                      "regular: noise every step (RegN); random: noise when a Bernoulli coin "
                      "says so (RanN).")
    flags.DEFINE_float("noise_probability", 1.0, "p of the random schedule's coin.")
    flags.DEFINE_enum("on_skip", "release", run_config.ON_SKIP,
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
    flags.DEFINE_enum("optimizer", "sgd", run_config.OPTIMIZERS, "Base optimizer.")
    flags.DEFINE_float("delta", 1e-5, "Delta of (epsilon, delta)-DP.")
    flags.DEFINE_integer("seed", 0, "Seed of what is not private: initial weights, dropout, "
                         "attack models' subsets. The DP noise and the batches come from "
                         "secret randomness that no seed reaches.")
    flags.DEFINE_integer("split_seed", 0, "Seed of the train/test split.")
    flags.DEFINE_enum("sampling", "poisson", run_config.SAMPLINGS,
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
    flags.DEFINE_enum("residual_noise", None, run_config.RESIDUAL_NOISE,
                      "--mechanism=residual_perturbation: additive (F + gamma*n, default) or "
                      "multiplicative (F + gamma*F*n) noise.")
    flags.DEFINE_float("activation_clip_norm", None, "--mechanism=neuraldp: per-example L2 "
                       "clip of the privatized activations (default 1.0).")
    flags.DEFINE_list("attack_types", None, "Membership-inference attacks to run on the trained "
                      "model (train vs test split), audited against its epsilon, e.g. "
                      "threshold,lr (default: none).")
    _cli.define_recipe_flags(run.RunConfig())
    _cli.define_privacy_unit_flags(run.RunConfig())
    _cli.define_accountant_flag(run.RunConfig())
    _cli.define_randomness_flags(run.RunConfig())
    _cli.define_training_metrics_flag(run.RunConfig())
    _cli.define_backbone_flags(run.RunConfig())
    _cli.define_banded_mf_flags(run.RunConfig())
    flags.DEFINE_string("metrics_path", None, "Metrics JSON (default: <model_dir>/metrics.json "
                        "or results/train_metrics.json).")


def config_from_flags() -> run.RunConfig:
    """The RunConfig the parsed flags describe (validated by the run)."""
    values = {f.name: FLAGS[f.name].value for f in dataclasses.fields(run.RunConfig)}
    if values["attack_types"] is not None:
        values["attack_types"] = tuple(values["attack_types"])
    return run.RunConfig(**values)


def metrics_path(config: run.RunConfig) -> str:
    """--metrics_path, else <model_dir>/metrics.json, else results/train_metrics.json."""
    if config.metrics_path:
        return config.metrics_path
    if config.model_dir:
        return os.path.join(config.model_dir, "metrics.json")
    return os.path.join("results", "train_metrics.json")


def main(argv: List[str]) -> None:
    """Entry point: train, print, write the metrics JSON."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        config = config_from_flags()
        result = run.train_and_evaluate(config)
    except ValueError as error:
        sys.exit(f"train.py: error: {error}")
    path = metrics_path(config)
    run.write_metrics(result, path)
    print(f"Wrote {path}")


def cli() -> None:
    """Entry point of `python scripts/<name>.py` and of the `tfdp-train` console script."""
    define_flags()
    app.run(main, argv=_cli.argv_with_helpful())


if __name__ == "__main__":
    cli()
