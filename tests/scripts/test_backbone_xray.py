"""scripts/train.py on made chest X-ray folders with a keras.applications backbone: per patient
and per image, LoRA and head-only, exported with a privacy record naming the backbone."""

import json
import math
import os

import numpy as np
import pytest

import tfdp
from tfdp.models.backbones import build_backbone

pytestmark = pytest.mark.slow  # whole script runs (about 10-20 s each)

# 11 images of 6 patients (person1, person12, person3, IM-0115, IM-0117, NORMAL2-IM-0135).
NAMES = {"NORMAL": ["IM-0115-0001", "IM-0115-0002", "IM-0117-0001",
                    "NORMAL2-IM-0135-0001", "NORMAL2-IM-0135-0002-0001"],
         "PNEUMONIA": ["person1_virus_6", "person1_virus_8", "person12_bacteria_47",
                       "person12_bacteria_48", "person12_bacteria_49", "person3_virus_1"]}


def _xray_folder(root):
    """Grayscale JPEGs named as in the public chest X-ray collection (train/ and test/)."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label, files in NAMES.items():
            for name in files:
                path = root / split / label / f"{name}.jpeg"
                path.parent.mkdir(parents=True, exist_ok=True)
                pixels = rng.integers(0, 255, size=(40, 40, 1)).astype(np.uint8)
                tf.io.write_file(str(path), tf.io.encode_jpeg(pixels))
    return root


def _statement(record):
    return " ".join(record["privacy"]["statement"].split())


def _train(run_script, tmp_path, *extra):
    data_dir = _xray_folder(tmp_path / "xray")
    metrics = tmp_path / "m.json"
    result = run_script("train.py", "--dataset=chest_xray", f"--data_dir={data_dir}",
                        "--image_size=32", "--backbone=mobilenetv3small", "--noise_multiplier=1.2",
                        "--batch_size=3", "--epochs=1", "--learning_rate=0.5",
                        f"--export_dir={tmp_path / 'export'}", f"--metrics_path={metrics}",
                        *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(metrics.read_text())
    exported = json.loads(open(os.path.join(record["export_path"], "assets.extra",
                                            "privacy.json")).read())
    return result, record, exported


def test_lora_per_patient_random_weights_exports_and_says_not_pretrained(tmp_path, run_script):
    result, record, exported = _train(run_script, tmp_path, "--fine_tune=lora",
                                      "--privacy_unit=patient", "--lora_rank=2")
    assert "RANDOM weights and is NOT pretrained" in result.stdout
    steps = math.ceil(6 / 3)
    want = tfdp.compute_epsilon(6, 3, 1.2, steps=steps, privacy_unit="patient", accountant="pld")
    assert record["ledger"]["steps"] == steps
    assert record["privacy"]["epsilon"] == pytest.approx(want.epsilon, rel=1e-9)
    statement = _statement(record)
    assert "Backbone: keras.applications MobileNetV3Small (mobilenetv3small), fine_tune=lora" \
        in statement and "LoRA of rank 2" in statement
    assert "NOT pretrained" in statement and "6 patients hold the 11 training examples" in statement
    assert " ".join(exported["statement"].split()) == statement
    assert exported["training"]["backbone"] == "mobilenetv3small"
    assert exported["training"]["fine_tune"] == "lora"
    assert exported["training"]["backbone_pretrained"] is False
    assert "backbone_weights" not in exported["training"]


def test_head_per_image_with_a_weights_file_caches_features_and_names_the_file(tmp_path,
                                                                              run_script):
    weights = tmp_path / "weights" / "small_random.weights.h5"
    weights.parent.mkdir()
    build_backbone("mobilenetv3small", (32, 32, 3)).save_weights(str(weights))
    result, record, exported = _train(run_script, tmp_path, "--fine_tune=head",
                                      f"--backbone_weights={weights}")
    assert "NOT pretrained" not in result.stdout
    assert "frozen layers' features computed once" in result.stdout  # the feature cache
    steps = math.ceil(11 / 3)
    want = tfdp.compute_epsilon(11, 3, 1.2, steps=steps, accountant="pld")
    assert record["privacy"]["epsilon"] == pytest.approx(want.epsilon, rel=1e-9)
    statement = " ".join(exported["statement"].split())
    assert "fine_tune=head: frozen; only the Dense head is trained" in statement
    assert "Pretrained weights loaded from a local file, small_random.weights.h5 (sha256" \
        in statement
    # Neither the weights' folder nor the data's stays in the export.
    assert str(weights.parent) not in json.dumps(exported)
    assert str(tmp_path) not in json.dumps(exported) and "data_dir" not in exported["training"]
    assert exported["training"]["backbone_pretrained"] is True


def test_missing_weights_file_stops_before_training(tmp_path, run_script):
    data_dir = _xray_folder(tmp_path / "xray")
    result = run_script("train.py", "--dataset=chest_xray", f"--data_dir={data_dir}",
                        "--image_size=32", "--backbone=resnet50v2",
                        f"--backbone_weights={tmp_path / 'missing.h5'}",
                        "--noise_multiplier=1.2", "--batch_size=3", "--epochs=1")
    assert result.returncode != 0
    assert "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5" in result.stderr
    assert "https://storage.googleapis.com/tensorflow/keras-applications/resnet/" in result.stderr
