"""tfdp.export.client and scripts/serving_client.py: REST and gRPC predict requests for TF Serving.

There is no TF Serving binary here, so the end-to-end tests run small stand-ins on
the loopback interface (bounded by timeouts) that answer the way TF Serving's
documented REST and gRPC APIs do, by running the exported SavedModel's
serving_default signature on the request they receive.
"""

import http.server
import json
import threading
from concurrent import futures

import grpc
import numpy as np
import pytest
import keras
import tensorflow as tf
from scipy import special
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

import tfdp
from tfdp import export

TIMEOUT = 20.0

from tfdp.export import client  # noqa: E402  (the library under scripts/serving_client.py)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A small exported classifier, its SavedModel signature and reference outputs."""
    keras.utils.set_random_seed(11)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                                 keras.layers.Dense(16, activation="relu"),
                                 keras.layers.Dense(10)])
    base = str(tmp_path_factory.mktemp("saved_models"))
    path = export.export_saved_model(model, base, "digits",
                                     privacy=tfdp.compute_epsilon(1000, 50, 1.0, epochs=1))
    x = np.random.default_rng(5).uniform(size=(4, 8, 8, 1)).astype("float32")
    logits = model(x, training=False).numpy().astype(np.float64)
    signature = tf.saved_model.load(path).signatures["serving_default"]
    return {"signature": signature, "x": x, "probabilities": special.softmax(logits, axis=1),
            "classes": logits.argmax(1), "path": path}


# ----- building requests -----

def test_rest_url_forms_and_refusals():
    assert (client.rest_url("localhost:8501", "digits")
            == "http://localhost:8501/v1/models/digits:predict")
    assert (client.rest_url("http://10.0.0.2:9000", "m", version=3)
            == "http://10.0.0.2:9000/v1/models/m/versions/3:predict")
    assert client.rest_url("[::1]:8501", "m") == "http://[::1]:8501/v1/models/m:predict"
    for address in ("localhost", "", "ftp://h:1", "h:1/v1/models", "h:port", "user@h:1"):
        with pytest.raises(ValueError):
            client.rest_url(address, "m")
    for name in ("a/b", "m:predict", "", "a b"):
        with pytest.raises(ValueError, match="model_name"):
            client.rest_url("h:1", name)
    with pytest.raises(ValueError, match="version"):
        client.rest_url("h:1", "m", version=-1)
    assert client.grpc_target("localhost:8500") == "localhost:8500"
    with pytest.raises(ValueError, match="without a scheme"):
        client.grpc_target("http://localhost:8500")


def test_rest_body_is_strict_tf_serving_json():
    x = np.arange(12, dtype=np.float64).reshape(3, 2, 2) / 7
    body = client.rest_request(x)
    text = client.rest_request_json(body)
    parsed = json.loads(text)
    assert set(parsed) == {"signature_name", "instances"}
    assert parsed["signature_name"] == "serving_default"
    assert np.asarray(parsed["instances"]).shape == (3, 2, 2)
    np.testing.assert_allclose(parsed["instances"], x.astype(np.float32), rtol=1e-7)
    named = client.rest_request(x, input_name="inputs", signature_name="other")
    assert named["signature_name"] == "other"
    assert [list(i) for i in named["instances"]] == [["inputs"]] * 3
    np.testing.assert_allclose(named["instances"][1]["inputs"], x[1].astype(np.float32))
    bad = x.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        client.rest_request(bad)
    with pytest.raises(ValueError, match="non-empty batch"):
        client.rest_request(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="rectangular"):
        client.rest_request([[1.0, 2.0], [3.0]])


def test_grpc_request_is_a_valid_predict_request():
    x = np.random.default_rng(2).normal(size=(3, 4, 2)).astype("float32")
    request = client.grpc_request(x, "digits", version=2)
    assert isinstance(request, predict_pb2.PredictRequest)
    # It survives the wire: serialize, parse as the server would.
    parsed = predict_pb2.PredictRequest.FromString(request.SerializeToString())
    assert parsed.model_spec.name == "digits"
    assert parsed.model_spec.signature_name == "serving_default"
    assert parsed.model_spec.version.value == 2
    assert list(parsed.inputs) == ["inputs"]
    tensor = parsed.inputs["inputs"]
    assert tensor.dtype == tf.float32.as_datatype_enum
    assert [d.size for d in tensor.tensor_shape.dim] == [3, 4, 2]
    np.testing.assert_array_equal(tf.make_ndarray(tensor), x)
    latest = client.grpc_request(x[:1], "m", input_name="image", dtype="float64")
    assert not latest.model_spec.HasField("version")
    assert latest.inputs["image"].dtype == tf.float64.as_datatype_enum
    with pytest.raises(ValueError, match="dtype"):
        client.grpc_request(x, "m", dtype="complex64")


def test_parse_rest_response_formats():
    rows = {"predictions": [{"probabilities": [0.2, 0.8], "classes": 1},
                            {"probabilities": [0.9, 0.1], "classes": 0}]}
    out = client.parse_rest_response(json.dumps(rows))
    np.testing.assert_array_equal(out["classes"], [1, 0])
    np.testing.assert_allclose(out["probabilities"], [[0.2, 0.8], [0.9, 0.1]])
    columns = client.parse_rest_response({"outputs": {"classes": [1, 0]}})
    np.testing.assert_array_equal(columns["classes"], [1, 0])
    single = client.parse_rest_response({"predictions": [[0.1, 0.9]]})
    np.testing.assert_allclose(single["predictions"], [[0.1, 0.9]])
    with pytest.raises(ValueError, match="error.*bad input"):
        client.parse_rest_response({"error": "bad input"})
    with pytest.raises(ValueError, match="not JSON"):
        client.parse_rest_response("<html>")


# ----- loopback stand-ins for TF Serving -----

def _run_signature(signature, inputs):
    (name, spec), = signature.structured_input_signature[1].items()
    return name, {k: v.numpy() for k, v in
                  signature(**{name: tf.constant(inputs[name], dtype=spec.dtype)}).items()}


class _RestHandler(http.server.BaseHTTPRequestHandler):
    """Answers POST /v1/models/<name>:predict like TF Serving's REST API (row format)."""

    signature = None
    seen = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append((self.path, self.headers.get("Content-Type"), body))
        if self.path != "/v1/models/digits:predict":
            return self._answer(404, {"error": f"Servable not found for request: {self.path}"})
        instances = body["instances"]
        name = next(iter(self.signature.structured_input_signature[1]))
        if instances and isinstance(instances[0], dict):
            instances = [i[name] for i in instances]
        _, outputs = _run_signature(self.signature, {name: np.asarray(instances)})
        rows = [{k: v[i].tolist() for k, v in outputs.items()} for i in range(len(instances))]
        self._answer(200, {"predictions": rows})

    def _answer(self, code, payload):
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # keep the test output quiet
        pass


def test_rest_round_trip_on_loopback(served):
    _RestHandler.signature, _RestHandler.seen = served["signature"], []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RestHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    try:
        address = f"127.0.0.1:{server.server_address[1]}"
        url = client.rest_url(address, "digits")
        outputs = client.send_rest(url, client.rest_request(served["x"]), timeout=TIMEOUT)
        np.testing.assert_allclose(outputs["probabilities"], served["probabilities"], atol=1e-5)
        np.testing.assert_array_equal(outputs["classes"], served["classes"])
        named = client.send_rest(url, client.rest_request(served["x"], input_name="inputs"),
                                 timeout=TIMEOUT)
        np.testing.assert_array_equal(named["classes"], served["classes"])
        with pytest.raises(ValueError, match="HTTP 404.*Servable not found"):
            client.send_rest(client.rest_url(address, "other"), client.rest_request(served["x"]),
                             timeout=TIMEOUT)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=TIMEOUT)
    path, content_type, body = _RestHandler.seen[0]
    assert path == "/v1/models/digits:predict" and content_type == "application/json"
    assert body["signature_name"] == "serving_default"


class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Answers Predict like TF Serving's gRPC API for one model name."""

    def __init__(self, signature):
        self.signature = signature
        self.requests = []

    def Predict(self, request, context):  # noqa: N802 (the proto's naming)
        self.requests.append(request)
        if request.model_spec.name != "digits":
            context.abort(grpc.StatusCode.NOT_FOUND, "Servable not found")
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        _, outputs = _run_signature(self.signature, inputs)
        response = predict_pb2.PredictResponse()
        response.model_spec.CopyFrom(request.model_spec)
        for name, value in outputs.items():
            response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
        return response


def test_grpc_round_trip_on_loopback(served):
    service = _PredictionService(served["signature"])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        address = f"127.0.0.1:{port}"
        outputs = client.send_grpc(address, client.grpc_request(served["x"], "digits"),
                                   timeout=TIMEOUT)
        np.testing.assert_allclose(outputs["probabilities"], served["probabilities"], atol=1e-5)
        np.testing.assert_array_equal(outputs["classes"], served["classes"])
        assert outputs["classes"].dtype == np.int64
        with pytest.raises(ValueError, match="NOT_FOUND"):
            client.send_grpc(address, client.grpc_request(served["x"], "other"), timeout=TIMEOUT)
    finally:
        server.stop(grace=None).wait(timeout=TIMEOUT)
    assert service.requests[0].model_spec.signature_name == "serving_default"


def test_script_dry_run_prints_the_request(tmp_path, run_script):
    x = np.random.default_rng(3).uniform(size=(2, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    done = run_script("serving_client.py", "--dry_run", "--address=localhost:8501",
                      "--model_name=digits", f"--input_npy={tmp_path / 'x.npy'}")
    assert done.returncode == 0, done.stderr[-2000:]
    first, body = done.stdout.split("\n", 1)
    assert first == "POST http://localhost:8501/v1/models/digits:predict"
    parsed = json.loads(body)
    np.testing.assert_allclose(parsed["instances"], x)
    assert parsed["signature_name"] == "serving_default"
