"""A client for models served by TF Serving: REST and gRPC predict requests and their answers.

The request builders and response parsers (`rest_url`, `rest_request`,
`grpc_request`, `parse_rest_response`, `parse_grpc_response`) are pure functions;
`send_rest` and `send_grpc` do the network calls, only to the address given.
`scripts/serving_client.py` is the command line over them.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Dict, Optional, Union

import numpy as np

SIGNATURE_NAME = "serving_default"  # what tfdp.export.export_saved_model writes
INPUT_NAME = "inputs"
REST_PORT, GRPC_PORT = 8501, 8500  # TF Serving's defaults
PROTOCOLS = ("rest", "grpc")
DTYPES = ("float32", "float64", "int32", "int64")


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
