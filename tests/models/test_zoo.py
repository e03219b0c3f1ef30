"""tfdp.models.zoo: every benchmark model builds, gives logits of the right shape, no BatchNorm."""

import keras
import numpy as np
import pytest

from tfdp.models import zoo

EXPECTED = {  # name: (example shape, classes, batch size)
    "tutorial_cnn": ((28, 28, 1), 10, 256),
    "pneumonia_cnn": ((128, 128, 1), 2, 32),
    "resnet": ((32, 32, 3), 10, 64),
    "transformer": ((64,), 2, 128),
    "lstm": ((64,), 2, 128),
    "text_cnn": ((64,), 2, 256),
    "mlp": ((784,), 10, 256),
}


def _all_layers(model):
    for layer in model._flatten_layers(include_self=False, recursive=True):
        yield layer


def test_zoo_lists_every_model():
    assert set(zoo.ZOO_NAMES) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_zoo_model_builds_and_forward_gives_logits(name):
    shape, classes, batch = EXPECTED[name]
    built = zoo.build_zoo_model(name)
    model, data, batch_size = built  # unpacks as (model, data maker, batch size)
    assert batch_size == batch
    assert data.input_shape == shape and data.num_classes == classes
    assert tuple(model.input_shape[1:]) == shape
    x, y = data(3, seed=1)
    assert x.shape == (3,) + shape and y.shape == (3,)
    assert y.min() >= 0 and y.max() < classes
    if data.vocab_size:
        assert x.dtype == np.int32 and x.min() >= 0 and x.max() < data.vocab_size
    else:
        assert x.dtype == np.float32
    out = model(x, training=False)
    assert tuple(out.shape) == (3, classes)
    assert np.all(np.isfinite(np.asarray(out)))
    assert not any(isinstance(layer, keras.layers.BatchNormalization)
                   for layer in _all_layers(model))


def test_data_is_reproducible_and_defaults_to_the_models_count():
    data = zoo.build_zoo_model("text_cnn").data
    x1, y1 = data(5, seed=3)
    x2, y2 = data(5, seed=3)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert data.num_examples == 2048  # as the Opacus peer's (peers/opacus_zoo.py)


def test_unknown_name_lists_the_zoo():
    with pytest.raises(ValueError, match="tutorial_cnn"):
        zoo.build_zoo_model("vgg")


@pytest.fixture(scope="module")
def fine_tuning_rows():
    return {name: zoo.build_zoo_model(name) for name in zoo.FINE_TUNING_NAMES}


def test_fine_tuning_rows_train_what_their_names_say(fine_tuning_rows):
    """Head: the head only; last block: the head and more backbone weights than LoRA's
    factors; LoRA: the head and lora_kernel_a/b only. All at 128x128 grayscale."""
    trainable = {name: [w.path for w in built.model.trainable_weights]
                 for name, built in fine_tuning_rows.items()}
    counts = {name: sum(int(np.prod(w.shape)) for w in built.model.trainable_weights)
              for name, built in fine_tuning_rows.items()}
    assert all(built.data.input_shape == (128, 128, 1) for built in fine_tuning_rows.values())
    assert sorted(trainable["mobilenet_head"]) == ["head/bias", "head/kernel"]
    lora = [p for p in trainable["mobilenet_lora"] if not p.startswith("head/")]
    assert lora and all("lora_kernel" in p for p in lora)
    assert counts["mobilenet_head"] < counts["mobilenet_lora"] < counts["mobilenet_last_block"]
    assert set(zoo.ALL_NAMES) == set(zoo.ZOO_NAMES) | set(zoo.FINE_TUNING_NAMES)
