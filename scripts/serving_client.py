"""Send predict requests to a model served by TF Serving, over REST or gRPC.

Start TF Serving on an export (see the README), then, for example:

    .venv/bin/python scripts/serving_client.py --address=localhost:8501 \
        --model_name=digits --dataset=digits --num_examples=5
    .venv/bin/python scripts/serving_client.py --protocol=grpc --address=localhost:8500 \
        --model_name=digits --input_npy=batch.npy

REST posts `{"signature_name": "serving_default", "instances": [...]}` to
`http://ADDRESS/v1/models/NAME[/versions/V]:predict`; gRPC sends a
`tensorflow_serving.apis.predict_pb2.PredictRequest` to `PredictionService/Predict`.
Requests go only to --address. `--dry_run` prints the request instead of sending it.

The request builders and response parsers (`rest_url`, `rest_request`,
`grpc_request`, `parse_rest_response`, `parse_grpc_response`) are pure functions;
`send_rest` and `send_grpc` do the network calls.
"""

from __future__ import annotations

import json
import math
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Dict, List, Optional, Union

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

if __package__:  # tfdp.scripts.<name>: an installed console script, or python -m
    from tfdp.scripts import _cli
else:  # python scripts/<name>.py: Python puts scripts/ first on sys.path
    import _cli  # noqa: E402

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

SIGNATURE_NAME = "serving_default"  # what tfdp.export.export_saved_model writes
INPUT_NAME = "inputs"
REST_PORT, GRPC_PORT = 8501, 8500  # TF Serving's defaults (for the help text only)
PROTOCOLS = ("rest", "grpc")
DTYPES = ("float32", "float64", "int32", "int64")

FLAGS = flags.FLAGS


# ----- pure request building -----

def _check_text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value or any(c in value for c in "/:?#% \t\n"):
        raise ValueError(f"`{name}` must be a non-empty name without '/', ':', '?', '#', '%' or "
                         f"spaces, got {value!r}.")
    return value


def _check_version(version: Optional[int]) -> Optional[int]:
    if version is None:
        return None
    if isinstance(version, bool) or not isinstance(version, (int, np.integer)) or version < 0:
        raise ValueError(f"`version` must be an integer >= 0 (or None for the latest), got "
                         f"{version!r}.")
    return int(version)


def _split_address(address: str) -> urllib.parse.SplitResult:
    if not isinstance(address, str) or not address.strip():
        raise ValueError("An address is required, e.g. --address=localhost:8501 (REST) or "
                         "localhost:8500 (gRPC).")
    address = address.strip()
    parts = urllib.parse.urlsplit(address if "://" in address else f"//{address}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None or parts.path not in ("", "/") or parts.query \
            or parts.fragment or parts.username or parts.password:
        raise ValueError(f"The address must be HOST:PORT (e.g. localhost:{REST_PORT}), got "
                         f"{address!r}.")
    return parts


def rest_url(address: str, model_name: str, *, version: Optional[int] = None) -> str:
    """`http://HOST:PORT/v1/models/NAME[/versions/V]:predict` for HOST:PORT (or an http[s] URL)."""
    parts = _split_address(address)
    scheme = parts.scheme or "http"
    if scheme not in ("http", "https"):
        raise ValueError(f"REST addresses are http:// or https://, got {address!r}.")
    path = f"/v1/models/{_check_text('model_name', model_name)}"
    version = _check_version(version)
    if version is not None:
        path += f"/versions/{version}"
    return f"{scheme}://{parts.netloc}{path}:predict"


def grpc_target(address: str) -> str:
    """`HOST:PORT` for grpc.insecure_channel (no scheme allowed)."""
    parts = _split_address(address)
    if parts.scheme:
        raise ValueError(f"gRPC addresses are HOST:PORT without a scheme, got {address!r}.")
    return parts.netloc


def as_batch(instances: Any, dtype: str = "float32") -> np.ndarray:
    """`instances` as a finite NumPy batch (examples along the first axis)."""
    if dtype not in DTYPES:
        raise ValueError(f"`dtype` must be one of {DTYPES}, got {dtype!r}.")
    try:
        batch = np.asarray(instances, dtype=dtype)
    except (TypeError, ValueError) as error:
        raise ValueError(f"The instances must be a rectangular array of numbers: {error}") from None
    if batch.ndim < 1 or batch.shape[0] == 0:
        raise ValueError(f"The instances must be a non-empty batch (examples along axis 0), got "
                         f"shape {batch.shape}.")
    if not np.all(np.isfinite(batch)):
        raise ValueError("The instances contain NaN or infinite values, which JSON and the "
                         "model cannot take.")
    return batch


def rest_request(
    instances: Any, *, signature_name: str = SIGNATURE_NAME, input_name: Optional[str] = None,
    dtype: str = "float32",
) -> Dict[str, Any]:
    """The JSON body of a TF Serving REST predict request (row format).

    With `input_name`, every instance is `{input_name: value}` (needed when the
    signature has several inputs); without, instances are the bare values (the
    signature's single input).
    """
    batch = as_batch(instances, dtype)
    rows: List[Any] = batch.tolist()
    if input_name is not None:
        rows = [{_check_text("input_name", input_name): row} for row in rows]
    return {"signature_name": _check_text("signature_name", signature_name), "instances": rows}


def rest_request_json(body: Dict[str, Any]) -> str:
    """`body` as strict JSON text (no NaN/Infinity tokens)."""
    return json.dumps(body, allow_nan=False)


def parse_rest_response(response: Union[str, bytes, Dict[str, Any]]) -> Dict[str, np.ndarray]:
    """{output name: array over the batch} from a REST predict response.

    Handles row format ({"predictions": [{...}, ...]} for named outputs, or
    [[...], ...] for one unnamed output, returned as "predictions") and column format
    ({"outputs": {...}}). A TF Serving error ({"error": "..."}) raises ValueError.
    """
    if isinstance(response, (str, bytes)):
        try:
            response = json.loads(response)
        except json.JSONDecodeError as error:
            raise ValueError(f"The server's answer is not JSON: {error}") from None
    if not isinstance(response, dict):
        raise ValueError(f"Unexpected REST response: {response!r:.200}")
    if "error" in response:
        raise ValueError(f"TF Serving answered with an error: {response['error']}")
    if "outputs" in response:
        outputs = response["outputs"]
        if isinstance(outputs, dict):
            return {k: np.asarray(v) for k, v in outputs.items()}
        return {"outputs": np.asarray(outputs)}
    predictions = response.get("predictions")
    if not isinstance(predictions, list):
        raise ValueError(f"The REST response has no 'predictions' list: {response!r:.200}")
    if predictions and all(isinstance(p, dict) for p in predictions):
        names = list(predictions[0])
        return {k: np.asarray([p[k] for p in predictions]) for k in names}
    return {"predictions": np.asarray(predictions)}


def grpc_request(
    instances: Any, model_name: str, *, input_name: str = INPUT_NAME,
    signature_name: str = SIGNATURE_NAME, version: Optional[int] = None, dtype: str = "float32",
):
    """A `tensorflow_serving.apis.predict_pb2.PredictRequest` for the batch `instances`."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    batch = as_batch(instances, dtype)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = _check_text("model_name", model_name)
    request.model_spec.signature_name = _check_text("signature_name", signature_name)
    version = _check_version(version)
    if version is not None:
        request.model_spec.version.value = version
    request.inputs[_check_text("input_name", input_name)].CopyFrom(
        tf.make_tensor_proto(batch, dtype=getattr(tf, dtype), shape=batch.shape))
    return request


def parse_grpc_response(response) -> Dict[str, np.ndarray]:
    """{output name: array} from a `PredictResponse`."""
    import tensorflow as tf

    return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}


# ----- network -----

def send_rest(url: str, body: Dict[str, Any], *, timeout: float = 10.0) -> Dict[str, np.ndarray]:
    """POSTs `body` to `url` (and nowhere else); returns the parsed outputs."""
    if not timeout or timeout <= 0 or not math.isfinite(timeout):
        raise ValueError(f"`timeout` must be a positive number of seconds, got {timeout!r}.")
    request = urllib.request.Request(
        url, data=rest_request_json(body).encode("utf-8"), method="POST",
        headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 (http only)
            return parse_rest_response(answer.read())
    except urllib.error.HTTPError as error:  # TF Serving explains errors in a JSON body
        detail = error.read().decode("utf-8", "replace")
        try:
            parse_rest_response(detail)
        except ValueError as parsed:
            raise ValueError(f"HTTP {error.code} from {url}: {parsed}") from None
        raise ValueError(f"HTTP {error.code} from {url}: {detail[:500]}") from None
    except urllib.error.URLError as error:
        raise ValueError(f"Could not reach {url}: {error.reason}. Is TF Serving running there "
                         f"with --rest_api_port?") from None


def send_grpc(address: str, request, *, timeout: float = 10.0) -> Dict[str, np.ndarray]:
    """Sends `request` to PredictionService/Predict at `address`; returns the parsed outputs."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    if not timeout or timeout <= 0 or not math.isfinite(timeout):
        raise ValueError(f"`timeout` must be a positive number of seconds, got {timeout!r}.")
    with grpc.insecure_channel(grpc_target(address)) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            response = stub.Predict(request, timeout=timeout)
        except grpc.RpcError as error:
            raise ValueError(f"gRPC Predict at {address} failed: {error.code().name}: "
                             f"{error.details()}") from None
    return parse_grpc_response(response)


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
