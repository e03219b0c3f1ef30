"""Choose the training recipe on a validation split of the training data (never the test set).

    .venv/bin/python scripts/sweep.py        # the grid that chose the shipped defaults

Trains Gaussian RegN-DP-SGD at --target_epsilon for every combination of the grid's
values and every seed, on --validation_fraction less of the training split, scores each
on the held-out part, and writes the ranking to --output_dir as `recipe_sweep.csv` and
`recipe_sweep.json` (best first). The sweep reads the training data, so what it chooses
is not covered by any run's epsilon: tfdp's defaults come from one recorded sweep and are
fixed in advance for the runs that use them. The sweep itself is `tfdp.run.sweep`.

    --grid="learning_rate=0.5,1,2;batch_size=128,256;ema_momentum=none,0.9"
"""

from __future__ import annotations

import os
import sys
from typing import List

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

if __package__:  # tfdp.scripts.<name>: an installed console script, or python -m
    from tfdp.scripts import _cli
else:  # python scripts/<name>.py: Python puts scripts/ first on sys.path
    import _cli  # noqa: E402

_cli.quiet_tensorflow_startup()

import dataclasses  # noqa: E402

from absl import app, flags  # noqa: E402
from absl import logging as absl_logging  # noqa: E402

from tfdp.run.sweep import DEFAULT_GRID, SweepConfig, grid_text, parse_grid, sweep  # noqa: E402

FLAGS = flags.FLAGS
_DEFAULTS = SweepConfig()


def define_flags() -> None:
    """Defines this script's absl flags (defaults: the library's SweepConfig)."""
    flags.DEFINE_string("grid", grid_text(DEFAULT_GRID),
                        "name=v1,v2;name2=... over RunConfig's recipe fields ('none' for unset).")
    flags.DEFINE_string("dataset", _DEFAULTS.base.dataset, "Data set (as in train.py).")
    flags.DEFINE_float("target_epsilon", _DEFAULTS.base.target_epsilon,
                       "Budget every candidate is calibrated to.")
    flags.DEFINE_integer("epochs", _DEFAULTS.base.epochs, "Epochs (unless the grid varies it).")
    flags.DEFINE_integer("seeds", _DEFAULTS.seeds, "Seeds per candidate (mean and spread).")
    flags.DEFINE_float("validation_fraction", _DEFAULTS.validation_fraction,
                       "Part of the training split held out to score the candidates.")
    flags.DEFINE_string("output_dir", _DEFAULTS.output_dir, "Where the ranking goes.")
    _cli.define_accountant_flag(_DEFAULTS.base)


def config_from_flags() -> SweepConfig:
    """The validated SweepConfig the parsed flags describe."""
    base = dataclasses.replace(_DEFAULTS.base, dataset=FLAGS.dataset,
                               target_epsilon=FLAGS.target_epsilon, epochs=FLAGS.epochs,
                               accountant=FLAGS.accountant)
    return SweepConfig(grid=parse_grid(FLAGS.grid), seeds=FLAGS.seeds,
                       validation_fraction=FLAGS.validation_fraction,
                       output_dir=FLAGS.output_dir, base=base).validated()


def main(argv: List[str]) -> None:
    """Entry point: run the sweep and write the ranking."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    absl_logging.set_verbosity(absl_logging.ERROR)  # dp_accounting's convergence warnings
    try:
        sweep(config_from_flags())
    except ValueError as error:
        sys.exit(f"sweep.py: error: {error}")


def cli() -> None:
    """Entry point of `python scripts/<name>.py` and of the `tfdp-sweep` console script."""
    define_flags()
    app.run(main, argv=_cli.argv_with_helpful())


if __name__ == "__main__":
    cli()
