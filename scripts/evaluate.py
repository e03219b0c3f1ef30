"""Membership-inference evaluation, utility metrics and a privacy audit of a saved model.

    .venv/bin/python scripts/evaluate.py --model_path=model.keras --dataset=digits
        --output_dir=results/evaluate [--privacy_json=results/train_metrics.json]

Members are the data set's training split (cut to --max_train_examples like
scripts/train.py does, with the same --split_seed), non-members its test split.
Writes `evaluation.json` and `membership_inference.png` to --output_dir.
The evaluation itself is `tfdp.run.evaluation.evaluate_privacy`.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

if __package__:  # tfdp.scripts.<name>: an installed console script, or python -m
    from tfdp.scripts import _cli
else:  # python scripts/<name>.py: Python puts scripts/ first on sys.path
    import _cli  # noqa: E402

_cli.quiet_tensorflow_startup()

from absl import app, flags, logging  # noqa: E402

from tfdp._json import jsonable  # noqa: E402
from tfdp.run import evaluation  # noqa: E402
from tfdp.data import load_dataset  # noqa: E402


FLAGS = flags.FLAGS


def define_flags() -> None:
    """The script's flags (`--help` / `--helpfull` list them)."""
    flags.DEFINE_string("model_path", None, "Saved Keras model (.keras, or a legacy .h5), or a "
                        "SavedModel folder with a serving_default signature (e.g. an export).")
    flags.DEFINE_string("dataset", "digits", "Data set: digits or breast_cancer (bundled with "
                        "scikit-learn), or any name tfdp.data.load_dataset knows.")
    flags.DEFINE_string("data_dir", None, "Folder of the data set (not for the bundled ones).")
    flags.DEFINE_integer("split_seed", 0, "Seed of the fixed stratified train/test split "
                         "(use the one the model was trained with).")
    flags.DEFINE_integer("max_train_examples", None, "Members: at most this many training "
                         "examples, picked as scripts/train.py picks them.")
    flags.DEFINE_integer("max_test_examples", None, "Non-members: at most this many test examples.")
    flags.DEFINE_string("output_dir", os.path.join("results", "evaluate"),
                        "Where evaluation.json and membership_inference.png go.")
    flags.DEFINE_list("attack_types", None, "Attacks (default all): threshold_attack, "
                      "threshold_entropy_attack, logistic_regression, multi_layered_perceptron, "
                      "random_forest, k_nearest_neighbors (or threshold, threshold-entropy, lr, "
                      "mlp, rf, knn).")
    flags.DEFINE_list("slicing", ["class"], "Slices besides the entire data set: class, "
                      "correctness, percentiles, or none.")
    flags.DEFINE_bool("trained_attacks_per_slice", False, "Also run the trained attacks on every "
                      "slice (slow); by default they run on the entire data set only.")
    flags.DEFINE_enum("from_logits", "auto", ("auto", "true", "false"),
                      "Whether the model outputs logits (auto: detect).")
    flags.DEFINE_integer("batch_size", 256, "Examples per forward pass.")
    flags.DEFINE_integer("seed", 0, "Seed of the attacks' shuffles and trained attackers.")
    flags.DEFINE_string("privacy_json", None, "JSON with the accountant's claim (keys epsilon and "
                        "delta at the top level or under 'privacy') to audit against. Without it, "
                        "the script tries tfdp.export.read_privacy(--model_path).")
    flags.DEFINE_float("confidence", 0.95, "Joint confidence of the audit's epsilon lower bound.")
    flags.DEFINE_string("backend", None, "scikit-learn backend for the trained attacks, e.g. "
                        "threading (default: single-threaded).")


def load_members_and_nonmembers():
    """The data set's (train, test) split, cut like scripts/train.py cuts it."""
    data = load_dataset(FLAGS.dataset, data_dir=FLAGS.data_dir, seed=FLAGS.split_seed)
    if FLAGS.max_train_examples or FLAGS.max_test_examples:
        data = data.subset(FLAGS.max_train_examples, FLAGS.max_test_examples, seed=FLAGS.split_seed)
    return data


def main(argv) -> None:
    """Entry point: attack, measure, audit, write evaluation.json and the plot."""
    del argv
    if not FLAGS["verbosity"].present:
        # The attack library logs every attack at INFO; keep the output to our summary.
        logging.set_verbosity(logging.WARNING)
    if not FLAGS.model_path:
        raise app.UsageError("--model_path is required.")
    model = evaluation.load_model(FLAGS.model_path)
    data = load_members_and_nonmembers()
    found = evaluation.evaluate_privacy(
        model, (data.x_train, data.y_train), (data.x_test, data.y_test),
        claim=evaluation.load_claim(FLAGS.privacy_json, FLAGS.model_path),
        attack_types=FLAGS.attack_types,
        slicing=[s for s in FLAGS.slicing if s != "none"] or None,
        from_logits={"auto": None, "true": True, "false": False}[FLAGS.from_logits],
        batch_size=FLAGS.batch_size, seed=FLAGS.seed, backend=FLAGS.backend,
        trained_attacks_per_slice=FLAGS.trained_attacks_per_slice, confidence=FLAGS.confidence,
    )
    report, audit = found.report, found.audit

    os.makedirs(FLAGS.output_dir, exist_ok=True)
    plot_path = report.plot(os.path.join(FLAGS.output_dir, "membership_inference.png"))
    result = {
        "model_path": FLAGS.model_path,
        "dataset": FLAGS.dataset,
        "data_description": getattr(data, "description", ""),
        "members": "training split", "non_members": "test split",
        "utility": found.utility,
        "membership_inference": report.to_dict(),
        "audit": audit.to_dict() if audit else None,
        "audit_note": None if audit else "No privacy claim found (--privacy_json): no audit.",
        "plot": plot_path,
    }
    json_path = os.path.join(FLAGS.output_dir, "evaluation.json")
    with open(json_path, "w") as f:
        json.dump(jsonable(result), f, indent=2)

    print(report.summary())
    print("Utility (test): " + ", ".join(
        f"{k} {v}" if isinstance(v, int) else f"{k} {v:.4f}"
        for k, v in found.utility["test"].items()))
    print(audit.message if audit else result["audit_note"])
    print(f"Wrote {json_path} and {plot_path}")


def cli() -> None:
    """Entry point of `python scripts/<name>.py` and of the `tfdp-evaluate` console script."""
    define_flags()
    app.run(main, argv=_cli.argv_with_helpful())


if __name__ == "__main__":
    cli()
