"""LayerScaleRule (ConvNeXt's per-channel scale): exact per-example norms and clipped sums
against the brute-force loop."""

import keras
import numpy as np
from keras.src.applications.convnext import LayerScale

from rule_check import check_against_brute_force

import tfdp.training.rules.layer_scale  # noqa: F401  (registers the rule)

RULE = "rule:LayerScaleRule"
BATCH = 6


def _x(*shape):
    return np.random.default_rng(0).normal(size=(BATCH,) + shape).astype("float32")


def _labels():
    return np.arange(BATCH) % 3


def _scale(name="scale"):
    layer = LayerScale(0.5, 4, name=name)
    return layer


def _image_model():
    inputs = keras.Input((3, 3, 2))
    h = keras.layers.Conv2D(4, 2, name="conv")(inputs)
    scale = _scale()
    h = scale(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(h))
    scale.gamma.assign(np.array([0.5, -1.0, 2.0, 0.25], np.float32))  # not all equal
    return model


def test_image_input_takes_the_rule():
    plan = check_against_brute_force(_image_model, _x(3, 3, 2), _labels())
    assert plan["scale"] == RULE


def test_called_twice_and_sample_weights():
    def make():
        inputs = keras.Input((5,))
        scale = _scale()
        first = scale(keras.layers.Dense(4, name="a")(inputs))
        second = scale(keras.layers.Dense(4, name="b")(inputs))
        return keras.Model(inputs, keras.layers.Dense(3, name="head")(
            keras.layers.Concatenate()([first, second])))

    plan = check_against_brute_force(make, _x(5), _labels(),
                                     sample_weight=np.array([1.0, 0.5, 2.0, 0.25, 1.5, 1.0]))
    assert plan["scale"] == RULE


def test_frozen_scale_has_no_entry():
    def make():
        model = _image_model()
        model.get_layer("scale").gamma.trainable = False
        return model

    plan = check_against_brute_force(make, _x(3, 3, 2), _labels())
    assert "scale" not in plan and plan["conv"].startswith("rule:")
