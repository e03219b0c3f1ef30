r"""Rebuilds the public prior that ships with tfdp: `models/public_digits_prior.npz`.

    .venv/bin/python scripts/pretrain_prior.py            # about 6 minutes on two cores

Pretrains `tfdp.models.pretrained.PRETRAIN["extractors"]` small CNNs on synthetic digits
rendered from matplotlib's fonts (no private data, no download) and stores their weights
with the settings they were made with. `pretrained_linear` reads the file; a model built
with other settings pretrains and caches its own.
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

if __package__:  # tfdp.scripts.<name>: an installed console script, or python -m
    from tfdp.scripts import _cli  # noqa: F401
else:  # python scripts/<name>.py: Python puts scripts/ first on sys.path
    import _cli  # noqa: E402,F401

from absl import app, flags  # noqa: E402

from tfdp.models import pretrained  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("output", pretrained.BUNDLED, "Where to write the weights (.npz).")


def main(argv) -> int:
    """Pretrains every extractor and writes the weights with their settings."""
    del argv
    start = time.time()
    settings = dict(pretrained.PRETRAIN)
    weights = pretrained.pretrain_weights(settings)
    pretrained.write_weights(FLAGS.output, settings, weights)
    print(f"Wrote {len(weights)} arrays of {settings['extractors']} extractors to "
          f"{FLAGS.output} in {time.time() - start:.0f} s.")
    return 0


def cli() -> None:
    """Console entry point."""
    app.run(main, argv=sys.argv)


if __name__ == "__main__":
    cli()
