"""Does banded matrix factorization (DP-MF) beat DP-SGD at equal epsilon? The record.

    .venv/bin/python recipes/banded_mf/compare_banded_mf.py            # every regime
    .venv/bin/python recipes/banded_mf/compare_banded_mf.py --regimes=digits_eps1.62

Two contenders at one budget: DP-SGD (Gaussian RegN, Poisson sampling) and banded DP-MF
(`mechanism="banded_mf"`, cyclic Poisson sampling over b folds, the default strategy
coefficients). Each gets the same learning-rate grid and banded MF also chooses its number
of bands b, tuned over three seeds on a validation copy of the training split (20% held
out, `tfdp.run.sweep.sweep_arms`); each arm's best setting is then trained on the whole
training split with the same seeds and scored once on the test split. Nothing is chosen
from the test figures. Regimes (one record each, `<regime>.json` and `.csv` here):

- rendered_digits_eps2: many steps per epoch. 20,000 digits rendered from fonts
  (`load_dataset("rendered_digits")`) to train on, the 1797 real digits to test on (the
  validation copy holds out 4,000 rendered digits); batch 256, 8 epochs (about 630
  steps), the digits CNN trained from scratch: not the recipe's `prior_linear`, whose
  features were pretrained on these very rendered digits, which would leave the noise
  little to hurt.
- digits_eps1.62: the bundled digits with the recipe (epsilon 1.62, batch 512, 40 epochs,
  `prior_linear`): n = 1437 (1149 in the validation copy), so batch * b <= n allows b = 2
  only, and there are 3 steps per epoch.

About 15 minutes on two shared cores (the grids are small to fit that budget).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402
from absl import logging as absl_logging  # noqa: E402

import tfdp.data  # noqa: E402
from tfdp.run.recipe import recipe_config  # noqa: E402
from tfdp.run.sweep import Arm, ArmsConfig, sweep_arms  # noqa: E402

OUTPUT_DIR = os.path.dirname(os.path.abspath(__file__))
RENDERED_TRAIN = 20000
RENDERED_RATES = (1.0, 2.0)
RENDERED_BANDS = (2, 4, 8)
DIGITS_RATES = (0.25, 0.5, 1.0)


def _arms(rates, bands):
    return (Arm("dp_sgd", (("learning_rate", rates),), (("mechanism", "gaussian"),)),
            Arm("banded_mf", (("bands", bands), ("learning_rate", rates)),
                (("mechanism", "banded_mf"),)))


def _rendered(epsilon):
    return dict(arms=_arms(RENDERED_RATES, RENDERED_BANDS),
                base=recipe_config(dataset="rendered_digits", model="digits_cnn",
                                   batch_size=256, epochs=8, mechanism="gaussian",
                                   target_epsilon=epsilon),
                data=dict(name="rendered_digits", num_train=RENDERED_TRAIN))


# regime -> the arms, the shared base (budget included) and the data set's loader arguments.
REGIMES = {
    "rendered_digits_eps2": _rendered(2.0),
    "digits_eps1.62": dict(arms=_arms(DIGITS_RATES, (2,)),
                           base=recipe_config(mechanism="gaussian", target_epsilon=1.62),
                           data=dict(name="digits")),
}
COMMAND = "python recipes/banded_mf/compare_banded_mf.py"

flags.DEFINE_list("regimes", list(REGIMES), f"Which regimes to run: {', '.join(REGIMES)}.")


def main(argv) -> None:
    """Runs each regime's comparison and writes its record beside this script."""
    del argv
    absl_logging.set_verbosity(absl_logging.ERROR)  # dp_accounting's convergence warnings
    for name in flags.FLAGS.regimes:
        regime = REGIMES[name]
        sweep_arms(ArmsConfig(arms=regime["arms"], base=regime["base"], output_dir=OUTPUT_DIR,
                              record_name=name, command=f"{COMMAND} --regimes={name}"),
                   data=tfdp.data.load_dataset(**regime["data"]),
                   log=lambda line: print(line, flush=True))


if __name__ == "__main__":
    sys.exit(app.run(main))
