"""Send predict requests to a model served by TF Serving, over REST or gRPC.

Start TF Serving on an export (see docs/serving.md), then, for example:

    .venv/bin/python scripts/serving_client.py --address=localhost:8501 \
        --model_name=digits --dataset=digits --num_examples=5
    .venv/bin/python scripts/serving_client.py --protocol=grpc --address=localhost:8500 \
        --model_name=digits --input_npy=batch.npy

REST posts `{"signature_name": "serving_default", "instances": [...]}` to
`http://ADDRESS/v1/models/NAME[/versions/V]:predict`; gRPC sends a
`tensorflow_serving.apis.predict_pb2.PredictRequest` to `PredictionService/Predict`.
Requests go only to --address. `--dry_run` prints the request instead of sending it.

The requests are built, sent and parsed by `tfdp.export.client`; this script reads
the flags and the batch, and prints the answer.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Dict, List

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

if __package__:  # tfdp.scripts.<name>: an installed console script, or python -m
    from tfdp.scripts import _cli
else:  # python scripts/<name>.py: Python puts scripts/ first on sys.path
    import _cli  # noqa: E402

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from tfdp.export.client import (  # noqa: E402  (the library this command line is over)
    DTYPES,
    GRPC_PORT,
    INPUT_NAME,
    PROTOCOLS,
    REST_PORT,
    SIGNATURE_NAME,
    grpc_request,
    rest_request,
    rest_request_json,
    rest_url,
    send_grpc,
    send_rest,
)

FLAGS = flags.FLAGS


# ----- the command line -----

def define_flags() -> None:
    """The script's flags (`--helpful` lists them)."""
    flags.DEFINE_enum("protocol", "rest", PROTOCOLS, "rest (TF Serving's --rest_api_port, "
                      f"default {REST_PORT}) or grpc (--port, default {GRPC_PORT}).")
    flags.DEFINE_string("address", None, "HOST:PORT of TF Serving, e.g. localhost:8501 (REST) or "
                        "localhost:8500 (gRPC). Requests go only there.")
    flags.DEFINE_string("model_name", None, "The served model's name (MODEL_NAME of the "
                        "container; the folder under the base path).")
    flags.DEFINE_integer("model_version", None, "A specific version (default: the latest).")
    flags.DEFINE_string("signature_name", SIGNATURE_NAME, "Signature to call.")
    flags.DEFINE_string("input_name", INPUT_NAME, "The signature's input name (gRPC; REST "
                        "sends bare instances unless --rest_named_inputs).")
    flags.DEFINE_bool("rest_named_inputs", False, "REST: send each instance as "
                      "{input_name: value}.")
    flags.DEFINE_enum("dtype", "float32", DTYPES, "Input dtype (the signature's).")
    flags.DEFINE_string("input_npy", None, "Batch to send, a .npy array (examples on axis 0).")
    flags.DEFINE_string("input_json", None, "Batch to send, a JSON list of examples.")
    flags.DEFINE_string("dataset", None, "Or send test examples of a data set tfdp.data knows "
                        "(digits, breast_cancer, ...).")
    flags.DEFINE_string("data_dir", None, "Folder of --dataset (not for the bundled ones).")
    flags.DEFINE_integer("num_examples", 3, "How many --dataset test examples to send.")
    flags.DEFINE_float("timeout", 10.0, "Seconds to wait for the answer.")
    flags.DEFINE_bool("dry_run", False, "Print the request instead of sending it.")
    flags.DEFINE_string("output_json", None, "Also write the outputs to this JSON file.")


def load_instances() -> np.ndarray:
    """The batch the flags name (exactly one of --input_npy, --input_json, --dataset)."""
    given = [f for f in ("input_npy", "input_json", "dataset") if FLAGS[f].value]
    if len(given) != 1:
        raise ValueError("Give exactly one of --input_npy, --input_json or --dataset"
                         + (f" (got {', '.join('--' + g for g in given)})." if given else "."))
    if FLAGS.input_npy:
        return np.load(FLAGS.input_npy, allow_pickle=False)
    if FLAGS.input_json:
        with open(FLAGS.input_json, encoding="utf-8") as f:
            return np.asarray(json.load(f))
    from tfdp.data import load_dataset

    if FLAGS.num_examples < 1:
        raise ValueError(f"--num_examples must be >= 1, got {FLAGS.num_examples}.")
    data = load_dataset(FLAGS.dataset, data_dir=FLAGS.data_dir)
    return np.asarray(data.x_test[: FLAGS.num_examples])


def _print_outputs(outputs: Dict[str, np.ndarray]) -> None:
    classes, probabilities = outputs.get("classes"), outputs.get("probabilities")
    if classes is None or probabilities is None:
        for name, value in outputs.items():
            print(f"{name}: {np.asarray(value).tolist()}")
        return
    for i, (label, probs) in enumerate(zip(classes, probabilities)):
        print(f"example {i}: class {int(label)} (probability {float(probs[int(label)]):.4f})")


def run() -> Dict[str, np.ndarray]:
    """Builds, prints or sends the request the flags describe."""
    if not FLAGS.model_name:
        raise ValueError("--model_name is required (the MODEL_NAME TF Serving serves).")
    batch = load_instances()
    if FLAGS.protocol == "rest":
        body = rest_request(batch, signature_name=FLAGS.signature_name, dtype=FLAGS.dtype,
                            input_name=FLAGS.input_name if FLAGS.rest_named_inputs else None)
        if FLAGS.dry_run:
            url = (rest_url(FLAGS.address, FLAGS.model_name, version=FLAGS.model_version)
                   if FLAGS.address else "http://HOST:PORT/v1/models/" + FLAGS.model_name +
                   ":predict")
            print(f"POST {url}\n{rest_request_json(body)}")
            return {}
        url = rest_url(FLAGS.address, FLAGS.model_name, version=FLAGS.model_version)
        outputs = send_rest(url, body, timeout=FLAGS.timeout)
    else:
        request = grpc_request(batch, FLAGS.model_name, input_name=FLAGS.input_name,
                               signature_name=FLAGS.signature_name, version=FLAGS.model_version,
                               dtype=FLAGS.dtype)
        if FLAGS.dry_run:
            print(f"PredictionService/Predict to {FLAGS.address or 'HOST:PORT'}\n{request}")
            return {}
        outputs = send_grpc(FLAGS.address, request, timeout=FLAGS.timeout)
    _print_outputs(outputs)
    if FLAGS.output_json:
        with open(FLAGS.output_json, "w", encoding="utf-8") as f:
            json.dump({k: np.asarray(v).tolist() for k, v in outputs.items()}, f, indent=2)
    return outputs


def main(argv: List[str]) -> None:
    """Entry point."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        run()
    except (ValueError, OSError) as error:
        sys.exit(f"serving_client.py: error: {error}")


def cli() -> None:
    """Entry point of `python scripts/<name>.py` and of the `tfdp-serving-client` console script."""
    define_flags()
    app.run(main, argv=_cli.argv_with_helpful())


if __name__ == "__main__":
    cli()
