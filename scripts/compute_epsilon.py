r"""Epsilon of a DP training run, or the noise multiplier that reaches a target epsilon.

Examples (from the repository root):

    # The TF Privacy MNIST tutorial setting (Poisson sampling assumed):
    .venv/bin/python scripts/compute_epsilon.py --num_examples=60000 --batch_size=256 \
        --noise_multiplier=1.1 --epochs=60

    # Shuffled fixed-size batches (plain model.fit): both figures, labelled.
    .venv/bin/python scripts/compute_epsilon.py --num_examples=60000 --batch_size=256 \
        --noise_multiplier=1.1 --epochs=60 --sampling=shuffle

    # The paper's random schedule, from a training ledger, as JSON:
    .venv/bin/python scripts/compute_epsilon.py --num_examples=1437 --batch_size=64 \
        --noise_multiplier=1.1 --steps=120 --noise_schedule=random --noise_probability=0.5 \
        --on_skip=drop --noisy_steps=57 --json

    # Banded matrix factorization (DP-MF) with 4 bands over cyclic Poisson batches:
    .venv/bin/python scripts/compute_epsilon.py --num_examples=40000 --batch_size=256 \
        --noise_multiplier=1.3 --steps=1256 --mechanism=banded_mf --bands=4

    # Calibrate: the smallest noise multiplier for epsilon 3 after 60 epochs.
    .venv/bin/python scripts/compute_epsilon.py --num_examples=60000 --batch_size=256 \
        --epochs=60 --target_epsilon=3

Prints the privacy statement and the figures; `--json` prints one JSON object instead
(infinite epsilons as the string "inf").
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, List

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

if __package__:  # tfdp.scripts.<name>: an installed console script, or python -m
    from tfdp.scripts import _cli
else:  # python scripts/<name>.py: Python puts scripts/ first on sys.path
    import _cli  # noqa: E402

from absl import app, flags  # noqa: E402

from tfdp import mechanisms  # noqa: E402
from tfdp.accounting import calibrate_noise_multiplier, compute_epsilon  # noqa: E402
from tfdp._json import jsonable  # noqa: E402
from tfdp.accounting import format_epsilon as fmt_epsilon  # noqa: E402

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command line: every argument of compute_epsilon and calibrate_noise_multiplier."""
    flags.DEFINE_integer("num_examples", None, "Training examples n.", required=True)
    flags.DEFINE_float("batch_size", None, "(Expected) batch size b; q = b / n.", required=True)
    flags.DEFINE_float("noise_multiplier", None,
                       "Noise std / L2 clip (Gaussian) or scale / L1 clip (Laplace).")
    flags.DEFINE_float("epochs", None, "Passes over the data (give this or --steps).")
    flags.DEFINE_integer("steps", None, "Steps taken: the ledger's iterations + dropped_steps.")
    flags.DEFINE_float("delta", 1e-5, "Delta of (epsilon, delta)-DP, in (0, 1).")
    flags.DEFINE_enum("mechanism", "gaussian", [*mechanisms.mechanism_names(), mechanisms.NO_NOISE],
                      "Noise mechanism (none: no privacy).")
    flags.DEFINE_enum("noise_schedule", "regular", mechanisms.values(mechanisms.NoiseSchedule),
                      "regular: noise every step; random: noise with probability p.")
    flags.DEFINE_float("noise_probability", 1.0, "p of the random schedule.")
    flags.DEFINE_enum("on_skip", "release", mechanisms.values(mechanisms.OnSkip),
                      "Random schedule: a noiseless step releases its gradient or is dropped.")
    flags.DEFINE_enum("sampling", "poisson", mechanisms.values(mechanisms.Sampling),
                      "poisson: tfdp.data.poisson_batches; shuffle: fixed-size shuffled batches.")
    flags.DEFINE_enum("accountant", None, mechanisms.values(mechanisms.Accountant),
                      "Accountant (default: rdp for Gaussian, pld for Laplace).")
    flags.DEFINE_integer("noisy_steps", None, "Noisy steps from the optimizer's ledger.")
    flags.DEFINE_bool("used_microbatching", False,
                      "Units of several examples (num_microbatches): sensitivity doubles.")
    flags.DEFINE_float("value_discretization_interval", 1e-4, "PLD grid (coarser is faster).")
    flags.DEFINE_float("target_epsilon", None,
                       "Calibrate: print the smallest noise multiplier reaching this epsilon "
                       "(with --epochs or --steps; random schedule: over its expected noisy steps).")
    flags.DEFINE_string("privacy_unit", "example",
                        "What one unit of the guarantee is: example, or a group such as "
                        "patient (then --num_examples and --batch_size count patients).")
    flags.DEFINE_integer("bands", None,
                         "--mechanism=banded_mf: the strategy's bands b (cyclic Poisson over b "
                         "folds; --batch_size * --bands must not exceed --num_examples).")
    flags.DEFINE_bool("json", False, "Print one JSON object instead of text.")


def _calibrate() -> Dict[str, Any]:
    if FLAGS.mechanism == mechanisms.NO_NOISE:
        raise app.UsageError("--target_epsilon needs a private --mechanism (gaussian, laplace "
                             "or banded_mf).")
    schedule = dict(noise_schedule=FLAGS.noise_schedule, noise_probability=FLAGS.noise_probability,
                    on_skip=FLAGS.on_skip)
    common = dict(delta=FLAGS.delta, mechanism=FLAGS.mechanism, sampling=FLAGS.sampling,
                  accountant=FLAGS.accountant, used_microbatching=FLAGS.used_microbatching,
                  value_discretization_interval=FLAGS.value_discretization_interval,
                  bands=FLAGS.bands, **schedule)
    multiplier = calibrate_noise_multiplier(
        FLAGS.target_epsilon, FLAGS.delta, FLAGS.num_examples, FLAGS.batch_size, FLAGS.epochs,
        steps=FLAGS.steps, **{k: v for k, v in common.items() if k != "delta"})
    result = compute_epsilon(FLAGS.num_examples, FLAGS.batch_size, multiplier,
                             epochs=FLAGS.epochs, steps=FLAGS.steps,
                             privacy_unit=FLAGS.privacy_unit, **common)
    report = {"noise_multiplier": multiplier, "target_epsilon": FLAGS.target_epsilon}
    report.update(result.to_dict())
    return report


def _compute() -> Dict[str, Any]:
    result = compute_epsilon(
        FLAGS.num_examples, FLAGS.batch_size, FLAGS.noise_multiplier,
        epochs=FLAGS.epochs, steps=FLAGS.steps, delta=FLAGS.delta, mechanism=FLAGS.mechanism,
        noise_schedule=FLAGS.noise_schedule, noise_probability=FLAGS.noise_probability,
        on_skip=FLAGS.on_skip, sampling=FLAGS.sampling, accountant=FLAGS.accountant,
        noisy_steps=FLAGS.noisy_steps, used_microbatching=FLAGS.used_microbatching,
        value_discretization_interval=FLAGS.value_discretization_interval,
        privacy_unit=FLAGS.privacy_unit, bands=FLAGS.bands,
    )
    return result.to_dict()


def main(argv: List[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        report = _calibrate() if FLAGS.target_epsilon is not None else _compute()
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    if FLAGS.json:
        print(json.dumps(jsonable(report), indent=2))
        return
    print(report["statement"])
    if "target_epsilon" in report:
        print(f"noise_multiplier={report['noise_multiplier']:.6g}")
    print(f"epsilon={fmt_epsilon(report['epsilon'])}")
    if report["noise_schedule"] == mechanisms.NoiseSchedule.RANDOM:
        print(f"epsilon_noisy_steps_only={fmt_epsilon(report['epsilon_noisy_steps_only'])}")
    if report.get("epsilon_assuming_poisson") is not None:
        print(f"epsilon_assuming_poisson={fmt_epsilon(report['epsilon_assuming_poisson'])}")
    print(f"delta={report['delta']:g} accountant={report['accountant']}")


def cli() -> None:
    """Entry point of `python scripts/<name>.py` and of the `tfdp-epsilon` console script."""
    define_flags()
    app.run(main, argv=_cli.argv_with_helpful())


if __name__ == "__main__":
    cli()
