"""The benchmark's model zoo: one model per kind of layer the fast path has to handle.

    build_zoo_model(name) -> ZooModel(model, data, batch_size)
    ZOO_NAMES                 every name, in the benchmark's order

`data(num_examples=None, seed=0)` makes synthetic `(x, y)` for the model (images from a
standard normal, token ids uniform over the vocabulary, integer labels); without
`num_examples` it makes the model's default count. The Opacus peer, `peers/opacus_zoo.py`
(`make peers`), builds every one of these nets in PyTorch with the same shapes, vocabulary,
batch size, number of examples and parameter count, so the two benchmarks read side by
side; tests/peers/test_opacus_zoo.py fails when the two drift apart:

| name | input | batch | examples | net |
|---|---|---|---|---|
| tutorial_cnn | 28x28x1 | 256 | 2048 | TF Privacy's MNIST tutorial CNN |
| pneumonia_cnn | 128x128x1 | 32 | 512 | tfdp.models.pneumonia_cnn, 3 conv blocks |
| resnet | 32x32x3 | 64 | 512 | tfdp.models.resnet, GroupNormalization |
| transformer | 64 tokens | 128 | 1024 | one attention block |
| lstm | 64 tokens | 128 | 1024 | Embedding(1000, 32), LSTM(32), Dense(2) |
| text_cnn | 64 tokens | 256 | 2048 | Embedding, Conv1D, max pooling |
| mlp | 784 | 256 | 2048 | Dense 512-256-10 (the benchmark's MLP) |

No model above has BatchNormalization; every one outputs logits.

`FINE_TUNING_NAMES` are the pretrained-backbone rows (tfdp only; Opacus's peer has no
keras.applications): keras.applications MobileNetV3Small (frozen BatchNormalization) at
128x128x1, grayscale as the chest X-rays are, batch 32, 512 examples, with a new head, in
the three fine-tuning modes of `tfdp.models.backbone_classifier`. The weights are random
(nothing is downloaded); speed and memory do not depend on their values.

| name | what trains |
|---|---|
| mobilenet_head | the head only (the backbone frozen) |
| mobilenet_last_block | the head and the backbone's last block (its BatchNormalization frozen) |
| mobilenet_lora | the head and rank-4 LoRA factors on the last block's convolutions |
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Callable, Dict, NamedTuple, Optional, Tuple

import keras
import numpy as np

from tfdp.models.cnn import pneumonia_cnn, tutorial_cnn
from tfdp.models.mlp import mlp
from tfdp.models.resnet import resnet

SEQUENCE_LENGTH = 64


@dataclasses.dataclass(frozen=True)
class SyntheticData:
    """The input spec of a zoo model and a maker of random training data for it.

    Attributes:
      input_shape: shape of one example (without the batch axis).
      num_classes: labels are integers in [0, num_classes).
      num_examples: how many examples `__call__` makes by default.
      vocab_size: for token inputs, ids are integers in [0, vocab_size); None for float inputs.
    """

    input_shape: Tuple[int, ...]
    num_classes: int
    num_examples: int
    vocab_size: Optional[int] = None

    @property
    def dtype(self) -> str:
        return "int32" if self.vocab_size else "float32"

    def __call__(self, num_examples: Optional[int] = None,
                 seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
        """Returns `(x, y)`: `num_examples` (default `self.num_examples`) random examples."""
        n = self.num_examples if num_examples is None else int(num_examples)
        rng = np.random.default_rng(seed)
        shape = (n,) + tuple(self.input_shape)
        if self.vocab_size:
            x = rng.integers(0, self.vocab_size, shape).astype(np.int32)
        else:
            x = rng.standard_normal(shape, dtype=np.float32)
        y = rng.integers(0, self.num_classes, n).astype(np.int32)
        return x, y


class ZooModel(NamedTuple):
    """A freshly built zoo model, its data maker and its batch size."""

    model: keras.Model
    data: SyntheticData
    batch_size: int


def _tutorial_cnn() -> ZooModel:
    return ZooModel(tutorial_cnn((28, 28, 1), 10),
                    SyntheticData((28, 28, 1), 10, 2048), 256)


def _pneumonia_cnn() -> ZooModel:
    return ZooModel(pneumonia_cnn((128, 128, 1), 2),
                    SyntheticData((128, 128, 1), 2, 512), 32)


def _resnet() -> ZooModel:
    return ZooModel(resnet((32, 32, 3), 10, normalization="group", groups=4),
                    SyntheticData((32, 32, 3), 10, 512), 64)


def _tokens(name: str) -> keras.KerasTensor:
    return keras.Input((SEQUENCE_LENGTH,), dtype="int32", name=name)


def _transformer() -> ZooModel:
    """Embedding(5000, 64), self-attention (4 heads of 16) with residual and LayerNormalization,
    Dense(128, ReLU), Dense(64), average over tokens, Dense(2)."""
    layers = keras.layers
    tokens = _tokens("tokens")
    h = layers.Embedding(5000, 64, name="embedding")(tokens)
    attended = layers.MultiHeadAttention(num_heads=4, key_dim=16, name="attention")(h, h)
    h = layers.LayerNormalization(name="attention_norm")(layers.Add(name="residual")([h, attended]))
    h = layers.Dense(128, activation="relu", name="ffn_in")(h)
    h = layers.Dense(64, name="ffn_out")(h)
    h = layers.GlobalAveragePooling1D(name="pool")(h)
    logits = layers.Dense(2, name="logits")(h)
    return ZooModel(keras.Model(tokens, logits, name="transformer"),
                    SyntheticData((SEQUENCE_LENGTH,), 2, 1024, vocab_size=5000), 128)


def _lstm() -> ZooModel:
    layers = keras.layers
    tokens = _tokens("tokens")
    h = layers.Embedding(1000, 32, name="embedding")(tokens)
    h = layers.LSTM(32, name="lstm")(h)
    logits = layers.Dense(2, name="logits")(h)
    return ZooModel(keras.Model(tokens, logits, name="lstm"),
                    SyntheticData((SEQUENCE_LENGTH,), 2, 1024, vocab_size=1000), 128)


def _text_cnn() -> ZooModel:
    """Embedding(5000, 64), Conv1D(64, 5, ReLU), max over tokens, Dense(64, ReLU), Dense(2)."""
    layers = keras.layers
    tokens = _tokens("tokens")
    h = layers.Embedding(5000, 64, name="embedding")(tokens)
    h = layers.Conv1D(64, 5, activation="relu", name="conv")(h)
    h = layers.GlobalMaxPooling1D(name="pool")(h)
    h = layers.Dense(64, activation="relu", name="dense")(h)
    logits = layers.Dense(2, name="logits")(h)
    return ZooModel(keras.Model(tokens, logits, name="text_cnn"),
                    SyntheticData((SEQUENCE_LENGTH,), 2, 2048, vocab_size=5000), 256)


def _mlp() -> ZooModel:
    return ZooModel(mlp((784,), 10, hidden_units=(512, 256)),
                    SyntheticData((784,), 10, 2048), 256)


_ZOO: Dict[str, Callable[[], ZooModel]] = {
    "tutorial_cnn": _tutorial_cnn,
    "pneumonia_cnn": _pneumonia_cnn,
    "resnet": _resnet,
    "transformer": _transformer,
    "lstm": _lstm,
    "text_cnn": _text_cnn,
    "mlp": _mlp,
}
ZOO_NAMES: Tuple[str, ...] = tuple(_ZOO)

BACKBONE = "mobilenetv3small"
FINE_TUNING_SHAPE = (128, 128, 1)


def _fine_tuned(mode: str) -> Callable[[], ZooModel]:
    def build() -> ZooModel:
        from tfdp.models.backbones import backbone_classifier  # keras.applications: lazily

        with warnings.catch_warnings():  # random weights on purpose: speed is the same
            warnings.filterwarnings("ignore", message=".*RANDOM weights")
            model = backbone_classifier(BACKBONE, FINE_TUNING_SHAPE, 2, fine_tune=mode)
        return ZooModel(model, SyntheticData(FINE_TUNING_SHAPE, 2, 512), 32)
    return build


_FINE_TUNING: Dict[str, Callable[[], ZooModel]] = {
    "mobilenet_head": _fine_tuned("head"),
    "mobilenet_last_block": _fine_tuned("last_blocks"),
    "mobilenet_lora": _fine_tuned("lora"),
}
# The pretrained-backbone rows (tfdp only: the Opacus peer measures ZOO_NAMES).
FINE_TUNING_NAMES: Tuple[str, ...] = tuple(_FINE_TUNING)
ALL_NAMES: Tuple[str, ...] = ZOO_NAMES + FINE_TUNING_NAMES


def build_zoo_model(name: str) -> ZooModel:
    """Builds the named zoo model afresh (new weights from Keras's global seed)."""
    builders = {**_ZOO, **_FINE_TUNING}
    if name not in builders:
        raise ValueError(f"Unknown zoo model {name!r}. Choose one of: {', '.join(ALL_NAMES)}.")
    return builders[name]()
