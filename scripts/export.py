"""Export a trained model as a TF Serving SavedModel with its privacy record.

From a training folder written by `scripts/train.py --model_dir=DIR` (its latest
checkpoint plus the metrics JSON the run wrote at its end):

    .venv/bin/python scripts/export.py --model_dir=runs/digits_gaussian

From a saved Keras model (a `.keras` file, or a legacy `.h5` one) and the privacy
record it was trained under (train.py's metrics JSON, or a JSON of
`tfdp.PrivacyResult.to_dict()`):

    .venv/bin/python scripts/export.py --model_path=model.keras \
        --privacy_json=results/train_metrics.json --name=digits

Writes `--export_dir/NAME/VERSION/` (default `saved_models/`, the next free
version) and prints where, with the privacy statement. The privacy record is in
`VERSION/assets.extra/privacy.json` (`tfdp.export.read_privacy` reads it).
The export itself is `tfdp.run.export_model`.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any, List, Optional

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

if __package__:  # tfdp.scripts.<name>: an installed console script, or python -m
    from tfdp.scripts import _cli
else:  # python scripts/<name>.py: Python puts scripts/ first on sys.path
    import _cli  # noqa: E402

_cli.quiet_tensorflow_startup()

from absl import app, flags, logging  # noqa: E402

import tfdp.export  # noqa: E402
from tfdp.run import exporting  # noqa: E402

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The script's flags (`--helpful` lists them)."""
    flags.DEFINE_string("model_dir", None, "A scripts/train.py --model_dir: the latest checkpoint "
                        "is exported, with the privacy record of the run's metrics JSON.")
    flags.DEFINE_string("metrics_path", None, "The run's metrics JSON when train.py wrote it "
                        "elsewhere than <model_dir>/metrics.json (its --metrics_path).")
    flags.DEFINE_string("model_path", None, "Or: a saved Keras model (a .keras file, or a "
                        "legacy .h5 one). Needs --privacy_json.")
    flags.DEFINE_string("privacy_json", None, "With --model_path: train.py's metrics JSON, a "
                        "JSON of tfdp.PrivacyResult.to_dict(), or another export's privacy.json.")
    flags.DEFINE_string("export_dir", "saved_models", "TF Serving base folder; the model goes "
                        "to <export_dir>/<name>/<version>/.")
    flags.DEFINE_string("name", None, "Model name (URL-safe; default: train.py's "
                        "<dataset>_<mechanism>_<schedule>, or the --model_path file name).")
    flags.DEFINE_integer("version", None, "Version number (default: the next free one; existing "
                         "versions are never overwritten).")
    flags.DEFINE_enum("from_logits", "auto", ("auto", "true", "false"),
                      "Whether the model outputs logits (auto: read from its last layer).")
    flags.DEFINE_string("input_name", tfdp.export.DEFAULT_INPUT_NAME,
                        "Name of the serving signature's input.")


def _format_epsilon(value: Any) -> str:
    return "inf" if isinstance(value, float) and math.isinf(value) else f"{float(value):.4g}"


def run(
    *, model_dir: Optional[str] = None, metrics_path: Optional[str] = None,
    model_path: Optional[str] = None, privacy_json: Optional[str] = None,
    export_dir: str = "saved_models", name: Optional[str] = None, version: Optional[int] = None,
    from_logits: str = "auto", input_name: str = tfdp.export.DEFAULT_INPUT_NAME,
) -> str:
    """Exports as the flags (same names) say, prints a summary; returns the version folder."""
    name, path = exporting.export_model(
        model_dir=model_dir, metrics_path=metrics_path, model_path=model_path,
        privacy_json=privacy_json, export_dir=export_dir, name=name, version=version,
        from_logits=from_logits, input_name=input_name)
    record = tfdp.export.read_privacy(path)
    print(f"Exported {name!r} version {record['export']['version']} to {path}")
    print(f"Serving signature {tfdp.export.SIGNATURE_NAME!r}: input {input_name!r} "
          f"{record['export']['input']['shape']} -> 'probabilities', 'classes'")
    print(f"Privacy: epsilon={_format_epsilon(record['epsilon'])} (delta={record['delta']:g}), "
          f"formal guarantee: {'yes' if record['has_formal_guarantee'] else 'NO'}.")
    print(record["statement"].rstrip())
    print(f"Privacy record: {os.path.join(path, tfdp.export.RECORD_PATH)}")
    return path


def main(argv: List[str]) -> None:
    """Entry point."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # TF logs every SavedModel file it writes
    try:
        run(**{k: FLAGS[k].value for k in (
            "model_dir", "metrics_path", "model_path", "privacy_json", "export_dir", "name",
            "version", "from_logits", "input_name")})
    except ValueError as error:
        sys.exit(f"export.py: error: {error}")


def cli() -> None:
    """Entry point of `python scripts/<name>.py` and of the `tfdp-export` console script."""
    define_flags()
    app.run(main, argv=_cli.argv_with_helpful())


if __name__ == "__main__":
    cli()
