"""tfdp.export: SavedModel for TF Serving with the privacy record; scripts/export.py.

The exported model is checked the ways TF Serving would meet it: reloaded in a
fresh process that cannot import tfdp, listed and run by saved_model_cli.
Reference predictions are computed here from the Keras model's logits with NumPy.
"""

import hashlib
import importlib
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import keras
import tensorflow as tf
from scipy import special

import tfdp
from tfdp import export
from tfdp.export import privacy_record

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYTHON = sys.executable
SAVED_MODEL_CLI = os.path.join(os.path.dirname(PYTHON), "saved_model_cli")
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
NUM_TRAIN, BATCH, EPOCHS = 512, 64, 2


def _run(args, timeout=300):
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=ENV, cwd=ROOT)
    return done


@pytest.fixture(scope="module")
def trained():
    """A small CNN-free classifier trained with DP-SGD (fast path) on the bundled digits."""
    from sklearn.datasets import load_digits

    keras.utils.set_random_seed(7)
    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    y = digits.target.astype("int64")
    x_train, y_train, x_test = x[:NUM_TRAIN], y[:NUM_TRAIN], x[NUM_TRAIN:NUM_TRAIN + 40]
    model = keras.Sequential([
        keras.Input((8, 8, 1), name="image"),
        keras.layers.Flatten(),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(10),
    ])
    private = tfdp.make_private(model)
    optimizer = tfdp.DPKerasSGDOptimizer(l2_norm_clip=1.0, noise_multiplier=1.1,
                                         learning_rate=0.5)
    private.compile(optimizer=optimizer, metrics=["accuracy"],
                    loss=keras.losses.SparseCategoricalCrossentropy(
                        from_logits=True, reduction=None))
    private.fit(x_train, y_train, batch_size=BATCH, epochs=EPOCHS, verbose=0)
    steps = int(optimizer.iterations.numpy())
    result = tfdp.compute_epsilon(NUM_TRAIN, BATCH, 1.1, steps=steps, delta=1e-5,
                                  sampling="shuffle")
    logits = model.predict(x_test, verbose=0)
    return {"model": private, "plain": model, "x": x_test, "logits": logits, "privacy": result,
            "steps": steps}


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    base = str(tmp_path_factory.mktemp("saved_models"))
    path = export.export_saved_model(trained["model"], base, "digits",
                                     privacy=trained["privacy"],
                                     training={"l2_norm_clip": 1.0, "epochs": EPOCHS})
    return base, path


def _tree_digest(folder):
    """Hash of every file's relative path, bytes and mtime under `folder`."""
    digest = hashlib.sha256()
    for root, _, files in sorted(os.walk(folder)):
        for name in sorted(files):
            full = os.path.join(root, name)
            digest.update(os.path.relpath(full, folder).encode())
            with open(full, "rb") as f:
                digest.update(f.read())
            digest.update(str(os.stat(full).st_mtime_ns).encode())
    return digest.hexdigest()


# ----- the SavedModel -----

_FRESH_LOAD = r"""
import sys
sys.modules["tfdp"] = None    # importing tfdp, the model builders or Keras now fails:
sys.modules["models"] = None  # the SavedModel must load without them
sys.modules["keras"] = None
sys.modules["tf_keras"] = None
import numpy as np, tensorflow as tf
path, x_path, out = sys.argv[1:4]
loaded = tf.saved_model.load(path)
signature = loaded.signatures["serving_default"]
outputs = signature(inputs=tf.constant(np.load(x_path)))
np.savez(out, **{k: v.numpy() for k, v in outputs.items()})
print(sorted(signature.structured_input_signature[1]))
"""


@pytest.mark.slow  # a new Python and TensorFlow (CI runs it)
def test_fresh_process_reload_matches_keras_predictions(trained, exported, tmp_path):
    _, path = exported
    x_path, out = str(tmp_path / "x.npy"), str(tmp_path / "out.npz")
    np.save(x_path, trained["x"])
    script = tmp_path / "load.py"
    script.write_text(_FRESH_LOAD)
    done = _run([PYTHON, str(script), path, x_path, out])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "['inputs']" in done.stdout
    served = np.load(out)
    expected = special.softmax(trained["logits"].astype(np.float64), axis=1)
    np.testing.assert_allclose(served["probabilities"], expected, atol=1e-5)
    np.testing.assert_array_equal(served["classes"], np.argmax(trained["logits"], axis=1))
    assert served["classes"].dtype == np.int64


@pytest.mark.slow  # a new Python and TensorFlow (CI runs it)
def test_saved_model_cli_show_lists_the_named_signature(exported):
    _, path = exported
    done = _run([SAVED_MODEL_CLI, "show", "--dir", path, "--all"])
    assert done.returncode == 0, done.stderr[-3000:]
    text = done.stdout
    section = text[text.index("signature_def['serving_default']"):]
    section = section[:section.index("Method name is")]
    assert "inputs['inputs'] tensor_info" in section
    assert "shape: (-1, 8, 8, 1)" in section
    assert "outputs['probabilities'] tensor_info" in section
    assert "shape: (-1, 10)" in section
    assert "outputs['classes'] tensor_info" in section
    assert "DT_INT64" in section
    assert "tensorflow/serving/predict" in text


@pytest.mark.slow  # a new Python and TensorFlow (CI runs it)
def test_saved_model_cli_run_on_a_made_input(trained, exported, tmp_path):
    _, path = exported
    x = trained["x"][:5]
    np.save(tmp_path / "x.npy", x)
    outdir = tmp_path / "cli_out"
    done = _run([SAVED_MODEL_CLI, "run", "--dir", path, "--tag_set", "serve",
                 "--signature_def", "serving_default", "--inputs",
                 f"inputs={tmp_path / 'x.npy'}", "--outdir", str(outdir)])
    assert done.returncode == 0, done.stderr[-3000:]
    probabilities = np.load(outdir / "probabilities.npy")
    classes = np.load(outdir / "classes.npy")
    expected = special.softmax(trained["logits"][:5].astype(np.float64), axis=1)
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    np.testing.assert_array_equal(classes, np.argmax(trained["logits"][:5], axis=1))


def test_layout_and_record_file(exported):
    base, path = exported
    assert path == os.path.join(base, "digits", "1")
    assert os.path.isfile(os.path.join(path, "saved_model.pb"))
    assert os.path.isfile(os.path.join(path, "assets.extra", "privacy.json"))
    # Nothing else in the base: the staging folder is gone.
    assert sorted(os.listdir(base)) == ["digits"]


def test_second_export_gets_version_2_and_leaves_version_1_untouched(trained, tmp_path):
    base = str(tmp_path)
    first = export.export_saved_model(trained["model"], base, "m", privacy=trained["privacy"])
    before = _tree_digest(first)
    second = export.export_saved_model(trained["plain"], base, "m", privacy=trained["privacy"])
    assert second == os.path.join(base, "m", "2")
    assert _tree_digest(first) == before
    assert export.read_privacy(os.path.join(base, "m"))["export"]["version"] == 2
    with pytest.raises(ValueError, match="already exists.*never overwritten"):
        export.export_saved_model(trained["model"], base, "m", privacy=trained["privacy"],
                                  version=1)
    assert _tree_digest(first) == before
    fifth = export.export_saved_model(trained["model"], base, "m", privacy=trained["privacy"],
                                      version=5)
    assert fifth == os.path.join(base, "m", "5")
    assert export.list_versions(os.path.join(base, "m")) == [1, 2, 5]
    assert export.export_saved_model(trained["model"], base, "m",
                                     privacy=trained["privacy"]).endswith(os.sep + "6")
    assert sorted(os.listdir(base)) == ["m"]


def test_training_only_noise_layers_are_off_and_binary_outputs(tmp_path):
    # Noise with a huge std: if it acted in serving, outputs would be far off and random.
    # Keras 3 caps GaussianNoise's std at 1 (as large as the tanh activations it perturbs);
    # tfdp's training-only ResidualPerturbation adds the huge one.
    keras.utils.set_random_seed(3)
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, activation="tanh")(inputs)
    hidden = keras.layers.GaussianNoise(1.0)(hidden)
    hidden = tfdp.layers.ResidualPerturbation(50.0)(hidden)
    logit = keras.layers.Dense(1)(keras.layers.Dropout(0.9)(hidden))
    model = keras.Model(inputs, logit)
    x = np.random.default_rng(0).normal(size=(16, 6)).astype("float32")
    z = model(x, training=False).numpy()[:, 0].astype(np.float64)
    path = export.export_saved_model(model, str(tmp_path), "binary",
                                     privacy=tfdp.compute_epsilon(100, 10, 1.0, epochs=1))
    serve = tf.saved_model.load(path).signatures["serving_default"]
    first, again = serve(inputs=x), serve(inputs=x)
    p1 = 1.0 / (1.0 + np.exp(-z))
    np.testing.assert_allclose(first["probabilities"].numpy(), np.stack([1 - p1, p1], 1),
                               atol=1e-6)
    np.testing.assert_array_equal(first["probabilities"].numpy(), again["probabilities"].numpy())
    np.testing.assert_array_equal(first["classes"].numpy(), (z > 0).astype(np.int64))
    assert export.read_privacy(path)["export"]["model_outputs"] == "logits"


def test_probability_outputs_are_served_as_they_are(tmp_path):
    keras.utils.set_random_seed(4)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3),
                                 keras.layers.Softmax()])
    x = np.random.default_rng(1).normal(size=(7, 5)).astype("float32")
    expected = model(x).numpy()
    path = export.export_saved_model(model, str(tmp_path), "soft",
                                     privacy=tfdp.compute_epsilon(100, 10, 1.0, epochs=1))
    out = tf.saved_model.load(path).signatures["serving_default"](inputs=x)
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-7)
    np.testing.assert_array_equal(out["classes"].numpy(), expected.argmax(1))
    with pytest.raises(ValueError, match="contradicts"):
        export.export_saved_model(model, str(tmp_path), "soft2", from_logits=True,
                                  privacy=tfdp.compute_epsilon(100, 10, 1.0, epochs=1))


class SubclassedNet(keras.Model):
    """A subclassed classifier: no symbolic inputs, its shape known from the first call."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(5, activation="tanh")
        self.logits = keras.layers.Dense(3)

    def call(self, inputs, training=None):
        return self.logits(self.hidden(keras.ops.reshape(inputs, (-1, 12))))


def test_subclassed_model_and_its_private_wrapper_export_from_the_built_shape(tmp_path):
    keras.utils.set_random_seed(5)
    model = SubclassedNet()
    x = np.random.default_rng(2).normal(size=(4, 3, 4)).astype("float32")
    logits = model(x, training=False).numpy().astype(np.float64)
    privacy = tfdp.compute_epsilon(100, 10, 1.0, epochs=1)
    for name, exported_model, kind in (("sub", model, "SubclassedNet"),
                                       ("wrapped", tfdp.make_private(model), "PrivateWrapper")):
        path = export.export_saved_model(exported_model, str(tmp_path), name, privacy=privacy)
        out = tf.saved_model.load(path).signatures["serving_default"](inputs=x)
        np.testing.assert_allclose(out["probabilities"].numpy(), special.softmax(logits, axis=1),
                                   atol=1e-6)
        np.testing.assert_array_equal(out["classes"].numpy(), logits.argmax(1))
        record = export.read_privacy(path)["export"]
        assert record["input"] == {"name": "inputs", "dtype": "float32", "shape": [None, 3, 4]}
        assert record["keras_class"] == kind and record["model_outputs"] == "logits"
    with pytest.raises(ValueError, match="not built"):
        export.export_saved_model(SubclassedNet(), str(tmp_path), "unbuilt", privacy=privacy)


def test_inference_noise_layers_are_recorded_and_stay_random_when_served(tmp_path):
    # The noisy layer sits in a nested model: Keras 3's `layers` lists only the top level.
    keras.utils.set_random_seed(6)
    inner_in = keras.Input((6,))
    inner = keras.Model(inner_in, tfdp.layers.ResidualPerturbation(
        1.0, active_at_inference=True, name="noisy")(keras.layers.Dense(6)(inner_in)))
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3)(inner(keras.layers.Dense(6)(inputs))))
    path = export.export_saved_model(model, str(tmp_path), "noisy",
                                     privacy=tfdp.compute_epsilon(100, 10, 1.0, epochs=1))
    assert export.read_privacy(path)["export"]["inference_noise_layers"] == ["noisy"]
    serve = tf.saved_model.load(path).signatures["serving_default"]
    x = np.ones((8, 4), "float32")
    first, again = (serve(inputs=x)["probabilities"].numpy() for _ in range(2))
    # The noise's seed state is a saved variable the signature advances: every call draws anew.
    assert np.abs(first - again).max() > 1e-3
    assert np.abs(first[0] - first[1]).max() > 1e-3


# ----- the privacy record -----

def test_record_with_infinite_epsilon_round_trips_as_strict_json(trained, tmp_path):
    result = tfdp.compute_epsilon(NUM_TRAIN, BATCH, 1.1, steps=16, noise_schedule="random",
                                  noise_probability=0.5)
    assert math.isinf(result.epsilon)
    path = export.export_saved_model(trained["model"], str(tmp_path), "rann", privacy=result,
                                     training={"l2_norm_clip": 1.0,
                                               "curve": [1.0, math.inf, -math.inf]})
    record_file = os.path.join(path, "assets.extra", "privacy.json")
    with open(record_file) as f:
        text = f.read()

    def refuse(token):
        raise AssertionError(f"non-standard JSON token {token}")
    strict = json.loads(text, parse_constant=refuse)
    assert strict["epsilon"] == "inf"

    for source in (path, os.path.dirname(path), record_file):
        record = export.read_privacy(source)
        for key, value in result.to_dict().items():
            assert record[key] == value, key
        assert record["epsilon"] == math.inf and isinstance(record["epsilon"], float)
        assert record["has_formal_guarantee"] is False
        assert record["training"]["curve"] == [1.0, math.inf, -math.inf]
        assert record["training"]["l2_norm_clip"] == 1.0
        assert "NO formal" in record["statement"]
    libraries = export.read_privacy(path)["libraries"]
    assert libraries["tensorflow"] == tf.__version__
    for name in ("tensorflow-privacy", "dp-accounting", "tfdp"):
        assert libraries[name]


def test_finite_record_from_train_style_dict(trained, exported):
    _, path = exported
    record = export.read_privacy(path)
    expected = trained["privacy"]
    assert math.isfinite(record["epsilon"]) and record["epsilon"] == expected.epsilon
    assert record["epsilon_noisy_steps_only"] == expected.epsilon_noisy_steps_only
    assert record["delta"] == 1e-5 and record["accountant"] == expected.accountant
    assert record["statement"] == expected.statement
    assert record["has_formal_guarantee"] is True
    assert record["steps"] == trained["steps"] and record["noise_multiplier"] == 1.1
    assert record["training"] == {"l2_norm_clip": 1.0, "epochs": EPOCHS}
    assert record["export"]["input"] == {"name": "inputs", "dtype": "float32",
                                         "shape": [None, 8, 8, 1]}
    assert record["export"]["keras_class"] == "PrivateModel"


def test_statement_gets_the_no_guarantee_sentence_when_missing(trained, tmp_path):
    privacy = {"epsilon": "inf", "epsilon_noisy_steps_only": 3.0, "delta": 1e-5,
               "accountant": "rdp", "statement": "Trained with the random schedule."}
    path = export.export_saved_model(trained["model"], str(tmp_path), "m", privacy=privacy)
    record = export.read_privacy(path)
    assert record["epsilon"] == math.inf
    assert record["statement"].startswith("Trained with the random schedule.")
    assert privacy_record.NO_GUARANTEE_SENTENCE in record["statement"]


# ----- bad input -----

def test_refuses_a_missing_or_broken_privacy_record(trained, tmp_path):
    base = str(tmp_path / "base")
    model = trained["model"]
    cases = [
        (None, "privacy record is required"),
        ({"epsilon": 1.0, "delta": 1e-5}, "lacks"),
        ({"privacy": trained["privacy"].to_dict()}, "pass its 'privacy' entry"),
        (dict(trained["privacy"].to_dict(), epsilon=-1.0), "epsilon"),
        (dict(trained["privacy"].to_dict(), epsilon=float("nan")), "epsilon"),
        (dict(trained["privacy"].to_dict(), delta=1.5), "delta"),
        (dict(trained["privacy"].to_dict(), statement=" "), "statement"),
        (dict(trained["privacy"].to_dict(), mechanism="none"), "mechanism 'none'"),
        (dict(trained["privacy"].to_dict(), extra=object()), "JSON cannot hold"),
        ("epsilon=1", "PrivacyResult or a dict"),
    ]
    for privacy, message in cases:
        with pytest.raises(ValueError, match=message):
            export.export_saved_model(model, base, "m", privacy=privacy)
    assert not os.path.exists(base)


def test_refuses_bad_models_names_versions_and_stray_folders(trained, tmp_path):
    privacy = trained["privacy"]
    unbuilt = keras.Sequential([keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="not built"):
        export.export_saved_model(unbuilt, str(tmp_path), "m", privacy=privacy)
    relu_out = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, "relu")])
    with pytest.raises(ValueError, match="logits or probabilities"):
        export.export_saved_model(relu_out, str(tmp_path), "m", privacy=privacy)
    two_in = keras.Input((2,)), keras.Input((2,))
    multi = keras.Model(list(two_in), keras.layers.Dense(2)(
        keras.layers.Concatenate()(list(two_in))))
    with pytest.raises(ValueError, match="2 inputs"):
        export.export_saved_model(multi, str(tmp_path), "m", privacy=privacy)
    for name in ("a/b", "", "..", "-x", "tfds:mnist"):
        with pytest.raises(ValueError, match="Model `name`"):
            export.export_saved_model(trained["model"], str(tmp_path), name, privacy=privacy)
    for version in (0, -1, 1.0, "2", True):
        with pytest.raises(ValueError, match="`version`"):
            export.export_saved_model(trained["model"], str(tmp_path), "m", privacy=privacy,
                                      version=version)
    os.makedirs(tmp_path / "m" / "1")
    os.makedirs(tmp_path / "m" / "tmp")
    with pytest.raises(ValueError, match=r"\['tmp'\].*not integer versions"):
        export.export_saved_model(trained["model"], str(tmp_path), "m", privacy=privacy)
    with pytest.raises(ValueError, match="not integer versions"):
        export.read_privacy(str(tmp_path / "m"))
    assert sorted(os.listdir(tmp_path / "m")) == ["1", "tmp"]
    assert sorted(os.listdir(tmp_path)) == ["m"]


def test_read_privacy_errors(trained, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        export.read_privacy(str(tmp_path / "nowhere"))
    plain = str(tmp_path / "plain" / "1")
    tf.saved_model.save(tf.Module(), plain)
    with pytest.raises(ValueError, match="no privacy record"):
        export.read_privacy(plain)
    with pytest.raises(ValueError, match="no privacy record"):
        export.read_privacy(os.path.dirname(plain))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(ValueError, match="neither a SavedModel"):
        export.read_privacy(str(tmp_path / "empty"))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        export.read_privacy(str(broken))


# ----- scripts -----

def _load_script(name):
    return importlib.import_module(f"tfdp.scripts.{name}")


from tfdp.run import checkpoint as run_checkpoint, exporting  # noqa: E402  (export.py's library)


@pytest.fixture(scope="module")
def train_run(tmp_path_factory, run_script):
    """scripts/train.py (in this process) with --model_dir and --export_dir: checkpoints,
    metrics, an export."""
    work = tmp_path_factory.mktemp("train_run")
    model_dir, base = str(work / "run"), str(work / "saved_models")
    done = run_script("train.py", "--dataset=digits", "--model=mlp", "--noise_multiplier=1.1",
                      "--epochs=1", "--batch_size=64", "--learning_rate=0.5",
                      "--max_train_examples=300", "--max_test_examples=60",
                      f"--model_dir={model_dir}", f"--export_dir={base}", "--export_name=digits")
    assert done.returncode == 0, done.stderr[-3000:]
    return model_dir, base


@pytest.mark.slow
def test_train_export_and_script_export_from_checkpoint_agree(train_run, tmp_path, run_script):
    model_dir, base = train_run
    with open(os.path.join(model_dir, "metrics.json")) as f:
        metrics = json.load(f)
    done = run_script("export.py", f"--model_dir={model_dir}", f"--export_dir={base}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert os.path.join(base, "digits", "2") in done.stdout
    by_train = export.read_privacy(os.path.join(base, "digits", "1"))
    by_script = export.read_privacy(os.path.join(base, "digits", "2"))
    for record in (by_train, by_script):
        assert record["epsilon"] == metrics["privacy"]["epsilon"]
        assert record["training"]["l2_norm_clip"] == 1.0
        assert record["training"]["mechanism"] == "gaussian"
        assert "model_dir" not in record["training"]
    assert by_script["training"]["ledger"] == metrics["ledger"]
    # Same weights: the script restored the checkpoint train.py exported from.
    x = np.random.default_rng(0).uniform(size=(6, 8, 8, 1)).astype("float32")
    outs = [tf.saved_model.load(os.path.join(base, "digits", v)).signatures["serving_default"](
        inputs=x)["probabilities"].numpy() for v in ("1", "2")]
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-6)
    assert np.abs(outs[0] - 0.1).max() > 1e-3  # a trained model, not a uniform guess


def test_script_export_from_keras_file_and_its_errors(trained, tmp_path, capsys):
    script = _load_script("export")
    keras_path = str(tmp_path / "my model.keras")
    trained["plain"].save(keras_path)
    privacy_json = tmp_path / "privacy.json"
    privacy_json.write_text(privacy_record.to_json(
        privacy_record.make_privacy_record(trained["privacy"])))
    base = str(tmp_path / "out")
    path = script.run(model_path=keras_path, privacy_json=str(privacy_json), export_dir=base)
    assert path == os.path.join(base, "my_model", "1")
    assert "formal guarantee: yes" in capsys.readouterr().out
    assert export.read_privacy(path)["epsilon"] == trained["privacy"].epsilon
    served = tf.saved_model.load(path).signatures["serving_default"](inputs=trained["x"])
    np.testing.assert_allclose(served["probabilities"].numpy(),
                               special.softmax(trained["logits"].astype(np.float64), 1), atol=1e-5)
    with pytest.raises(ValueError, match="needs --privacy_json"):
        script.run(model_path=keras_path, export_dir=base)
    with pytest.raises(ValueError, match="exactly one of --model_dir"):
        script.run(export_dir=base)
    with pytest.raises(ValueError, match="not valid JSON"):
        script.run(model_path=keras_path, privacy_json=keras_path, export_dir=base)
    other = tmp_path / "other.json"
    other.write_text('{"accuracy": 0.9}')
    with pytest.raises(ValueError, match="not a tfdp privacy record"):
        script.run(model_path=keras_path, privacy_json=str(other), export_dir=base)
    assert export.list_versions(os.path.join(base, "my_model")) == [1]


@pytest.mark.slow
def test_script_helpers_refuse_a_ledger_from_another_run(train_run, tmp_path):
    model_dir, _ = train_run
    with open(os.path.join(model_dir, "metrics.json")) as f:
        metrics = json.load(f)
    checkpoint = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    counters = run_checkpoint.checkpoint_counters(checkpoint)
    assert counters["applied_steps"] == metrics["ledger"]["applied_steps"] > 0
    exporting.check_ledger(metrics, counters, checkpoint)  # the run's own record: accepted
    stale = dict(metrics, ledger=dict(metrics["ledger"], noisy_steps=1))
    with pytest.raises(ValueError, match="does not describe checkpoint"):
        exporting.check_ledger(stale, counters, checkpoint)
    with pytest.raises(ValueError, match="no checkpoint"):
        exporting.load_from_model_dir(str(tmp_path), None)
    assert exporting.default_name("/x/my model.v1.keras") == "my_model.v1"


def test_script_restores_plain_and_private_checkpoints_and_refuses_others(tmp_path):
    """train.py checkpoints the model it trained: plain, or (DP runs) its make_private wrap."""

    def build(extra=False):
        layers = [keras.Input((4,)), keras.layers.Dense(5), keras.layers.Dense(3)]
        return keras.Sequential(layers + ([keras.layers.Dense(2)] if extra else []))

    keras.utils.set_random_seed(8)
    trained_plain, trained_private = build(), tfdp.make_private(build())
    for name, saved, kind in (("plain", trained_plain, "Sequential"),
                              ("private", trained_private, "PrivateModel")):
        checkpoint = tf.train.Checkpoint(model=saved, optimizer=keras.optimizers.SGD()).save(
            str(tmp_path / name / "ckpt"))
        restored = run_checkpoint.restore_model(build(), checkpoint)
        assert type(restored).__name__ == kind
        for a, b in zip(restored.get_weights(), saved.get_weights()):
            np.testing.assert_array_equal(a, b)
        assert run_checkpoint.checkpoint_counters(checkpoint) == {
            "applied_steps": 0, "noisy_steps": 0, "dropped_steps": 0}
        with pytest.raises(ValueError, match="does not hold every weight"):
            run_checkpoint.restore_model(build(extra=True), checkpoint)
    model_only = tf.train.Checkpoint(model=trained_plain).save(str(tmp_path / "bare" / "ckpt"))
    with pytest.raises(ValueError, match="no Keras 3 optimizer step counter"):
        run_checkpoint.checkpoint_counters(model_only)
    folder = tmp_path / "saved_model_folder"
    tf.saved_model.save(tf.Module(), str(folder))
    with pytest.raises(ValueError, match="is a folder.*model.keras"):
        exporting.load_keras_model(str(folder))


@pytest.mark.parametrize("mechanism", ["gaussian", "none"])
def test_export_from_model_dir_holds_the_weight_average_the_run_evaluated(tmp_path, mechanism):
    """With EMA a checkpoint holds the last weights and the average apart; the run ends by
    writing the average into the model, and an export from its model_dir must do the same."""
    from tfdp import run

    model_dir = str(tmp_path / "run")
    config = run.RunConfig(
        dataset="digits", model="mlp", mechanism=mechanism, epochs=2, batch_size=64,
        learning_rate=0.5, max_train_examples=300, max_test_examples=60, ema_momentum=0.9,
        noise_multiplier=1.1 if mechanism != "none" else None, model_dir=model_dir)
    result = run.train_and_evaluate(config, log=lambda *_: None)
    run.write_metrics(result, os.path.join(model_dir, "metrics.json"))
    restored, privacy, _, _ = exporting.load_from_model_dir(model_dir)
    data = run.load_data(result.config)
    x = data.x_test
    expected = result.model.predict(x, verbose=0)
    np.testing.assert_allclose(restored.predict(x, verbose=0), expected, atol=1e-5)
    # The last weights alone are another model: the average was really written in.
    last = run_checkpoint.restore_model(run.build_model(result.config, data),
                                        run_checkpoint.latest_checkpoint(model_dir))
    assert np.abs(last.predict(x, verbose=0) - expected).max() > 1e-3
    assert privacy["epsilon"] == result.to_dict()["privacy"]["epsilon"]


@pytest.mark.parametrize("script_name, flag", [("export.py", "--model_dir"),
                                               ("serving_client.py", "--address")])
def test_helpful_lists_flags(script_name, flag, run_script):
    done = run_script(script_name, "--helpful")  # in this process: conftest's run_script
    assert done.returncode in (0, 1), done.stderr[-2000:]
    assert flag in done.stdout + done.stderr


@pytest.mark.slow
def test_evaluate_script_reads_an_export_through_its_signature(trained, exported, tmp_path,
                                                              run_script):
    """scripts/evaluate.py (in this process) on the exported version folder: same accuracy as
    the Keras model."""
    from tfdp import attacks
    from tfdp.data import load_dataset

    _, version_dir = exported
    out = tmp_path / "evaluation"
    done = run_script("evaluate.py", f"--model_path={version_dir}", "--dataset=digits",
                      f"--output_dir={out}", "--attack_types=threshold")
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((out / "evaluation.json").read_text())
    data = load_dataset("digits")
    expected = attacks.utility_metrics(trained["plain"], (data.x_test, data.y_test),
                                       from_logits=True)
    assert record["utility"]["test"]["accuracy"] == pytest.approx(expected["accuracy"])
