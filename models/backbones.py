"""keras.applications backbones under a DP head: head-only, last-block or LoRA fine-tuning.

    BACKBONES                                   the supported names and their facts
    backbone_blocks(name, backbone)             the backbone's blocks, in order
    backbone_classifier(name, input_shape, num_classes, *, weights_path=None,
                        fine_tune="head", fine_tune_blocks=1, lora_rank=4)
    backbone_statement(name, fine_tune, weights_path, ...)   the privacy statement's words

Public pretraining, private fine-tuning: the backbone's weights come from a LOCAL file
only (keras.applications' "no top" ImageNet file, downloaded by the user beforehand);
nothing is ever downloaded here. Without a file the backbone has random weights, which
is not pretraining, and everything says so (a warning, the privacy statement).

The classifier takes images in [0, 1] (tfdp's loaders give that), repeats a single
channel three times (grayscale X-rays), scales the pixels to what the backbone expects,
and ends in a zero-initialized Dense head on the backbone's average-pooled features.
BatchNormalization stays frozen in every mode (`tfdp.training.set_fine_tuning`): it runs
on its pretrained moving statistics and mixes no examples of a batch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import keras

from tfdp.training.fine_tuning import FINE_TUNE_MODES, HEAD, LORA, set_fine_tuning

_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclasses.dataclass(frozen=True)
class Backbone:
    """One supported keras.applications backbone.

    Attributes:
      builder: the keras.applications function's name (e.g. "ResNet50V2").
      weights_file: keras.applications' ImageNet weights without the top (include_top=False).
      weights_url: where keras.applications downloads that file from.
      num_blocks: the architecture's blocks (the stem not counted).
      input_scale, input_offset: pixels in [0, 1] times scale plus offset is the input the
        backbone expects (its own preprocessing layers, if any, follow).
      block_key: a layer name -> its block's key (None: the layer joins the block before).
    """

    builder: str
    weights_file: str
    weights_url: str
    num_blocks: int
    input_scale: float
    input_offset: float
    block_key: Callable[[str], Optional[Tuple]]


def _resnet_v2_key(name: str) -> Optional[Tuple]:
    match = re.match(r"conv(\d+)_block(\d+)_", name)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _mobilenet_v3_key(name: str) -> Optional[Tuple]:
    # "expanded_conv_depthwise" is block 0, "expanded_conv_10_expand" block 10.
    match = re.match(r"expanded_conv(?:_(\d+))?_", name)
    return (int(match.group(1) or 0),) if match else None


def _efficientnet_v2_key(name: str) -> Optional[Tuple]:
    match = re.match(r"block(\d+)([a-z])_", name)
    return (int(match.group(1)), match.group(2)) if match else None


def _convnext_key(name: str) -> Optional[Tuple]:
    match = re.search(r"_stage_(\d+)_block_(\d+)_", name)
    if match:
        return (int(match.group(1)), int(match.group(2)))
    # Downsampling layer i feeds stage i + 1: it is the start of that stage's first block.
    match = re.search(r"_downsampling_block_(\d+)$", name)
    return (int(match.group(1)) + 1, 0) if match else None


def _file(folder: str, name: str) -> Tuple[str, str]:
    return name, f"{_URL}{folder}/{name}"


# File names and URLs as keras.applications' source builds them (resnet.py, mobilenet_v3.py,
# efficientnet_v2.py, convnext.py; tests/models/test_backbones.py checks them against it).
# ResNet50V2 expects [-1, 1] (preprocess_input mode "tf") and has no preprocessing layer;
# the others include their preprocessing (Rescaling / Normalization) and expect [0, 255].
BACKBONES: Dict[str, Backbone] = {
    "resnet50v2": Backbone(
        "ResNet50V2", *_file("resnet", "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        num_blocks=16, input_scale=2.0, input_offset=-1.0, block_key=_resnet_v2_key),
    "mobilenetv3small": Backbone(
        "MobileNetV3Small",
        *_file("mobilenet_v3", "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"),
        num_blocks=11, input_scale=255.0, input_offset=0.0, block_key=_mobilenet_v3_key),
    "mobilenetv3large": Backbone(
        "MobileNetV3Large",
        *_file("mobilenet_v3", "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5"),
        num_blocks=15, input_scale=255.0, input_offset=0.0, block_key=_mobilenet_v3_key),
    "efficientnetv2b0": Backbone(
        "EfficientNetV2B0", *_file("efficientnet_v2", "efficientnetv2-b0_notop.h5"),
        num_blocks=21, input_scale=255.0, input_offset=0.0, block_key=_efficientnet_v2_key),
    "convnexttiny": Backbone(
        "ConvNeXtTiny", *_file("convnext", "convnext_tiny_notop.h5"),
        num_blocks=18, input_scale=255.0, input_offset=0.0, block_key=_convnext_key),
}


def _spec(name: str) -> Backbone:
    if name not in BACKBONES:
        raise ValueError(f"Unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}.")
    return BACKBONES[name]


def backbone_blocks(name: str, backbone: keras.Model) -> List[List[keras.layers.Layer]]:
    """The backbone's layers grouped into its blocks, in the order the data meets them.

    The first list is the stem (every layer before the first block); a layer outside any
    block (an activation, the last convolution, post_bn, top_conv, the final
    normalization) joins the block before it, so the last list also holds the layers after
    the last block. Input layers are left out. The result has `BACKBONES[name].num_blocks
    + 1` lists.
    """
    key_of = _spec(name).block_key
    blocks: Dict[Tuple, List[keras.layers.Layer]] = {("stem",): []}
    current: Tuple = ("stem",)
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        key = key_of(layer.name)
        if key is not None:
            current = key
        blocks.setdefault(current, []).append(layer)
    return list(blocks.values())


def _missing_weights_message(name: str, path: str) -> str:
    spec = _spec(name)
    return (f"--backbone_weights={path!r}: no such file. The {spec.builder} backbone loads "
            f"keras.applications' ImageNet weights without the top, {spec.weights_file}, from "
            f"{spec.weights_url} (tfdp never downloads it: fetch it yourself, e.g. "
            f"`curl -O {spec.weights_url}`), put it anywhere (e.g. ~/.keras/models/) and pass "
            "its path with --backbone_weights (weights_path= in Python). Without "
            "--backbone_weights the backbone has random weights and is NOT pretrained.")


def load_backbone_weights(name: str, backbone: keras.Model, weights_path: str) -> None:
    """Loads `weights_path` into the backbone; a clear ValueError when it cannot.

    Accepts keras.applications' `.h5` files and Keras's `.weights.h5` files.
    """
    spec = _spec(name)
    if not os.path.isfile(weights_path):
        raise ValueError(_missing_weights_message(name, weights_path))
    try:
        _check_shapes(backbone, weights_path)
        with warnings.catch_warnings():
            # Keras only warns when a .weights.h5 file lacks some layers: a wrong file.
            warnings.filterwarnings("error", message=".*(Skipping|could not be loaded).*")
            backbone.load_weights(weights_path)
    except Exception as error:  # Keras raises ValueError, OSError, KeyError... by format
        raise ValueError(
            f"--backbone_weights={weights_path!r} could not be loaded into {spec.builder} "
            f"(include_top=False): {type(error).__name__}: {str(error)[:300]}. It must be "
            f"that backbone's weights without the top, e.g. keras.applications' "
            f"{spec.weights_file} ({spec.weights_url}), or a .weights.h5 file saved from "
            "the same backbone.") from None


def _check_shapes(backbone: keras.Model, weights_path: str) -> None:
    """Raises unless the file's arrays have exactly the backbone's weights' shapes.

    Both formats (keras.applications' .h5 and Keras 3's .weights.h5) store one HDF5 data
    set per weight; Keras itself loads a .weights.h5 of another model with warnings only.
    """
    import h5py  # Keras's own dependency for .h5 weights

    shapes: List[Tuple[int, ...]] = []
    with h5py.File(weights_path, "r") as f:
        f.visititems(lambda _, item: shapes.append(tuple(item.shape))
                     if isinstance(item, h5py.Dataset) else None)
    want = sorted(tuple(int(d) for d in w.shape) for w in backbone.weights)
    if sorted(shapes) != want:
        raise ValueError(f"the file holds {len(shapes)} arrays, the backbone has {len(want)} "
                         "weights of other shapes")


def _warn_random(name: str) -> str:
    message = (f"The {_spec(name).builder} backbone has RANDOM weights: it is NOT pretrained "
               "(no weights_path / --backbone_weights given). Pass keras.applications' "
               f"file {_spec(name).weights_file} for public pretraining.")
    warnings.warn(message, UserWarning, stacklevel=3)
    return message


def _grouped(layer: keras.layers.Layer) -> bool:
    """A grouped convolution (ConvNeXt's depthwise Conv2D): left out of LoRA. Its kernel is
    small (k x k per channel), and LoRA's factors on it have no exact per-example rule."""
    return getattr(layer, "groups", 1) > 1


def build_backbone(name: str, input_shape: Sequence[int]) -> keras.Model:
    """The keras.applications backbone for 3-channel `input_shape`: no top, average pooling,
    random weights (weights=None: nothing is downloaded)."""
    height, width = int(input_shape[0]), int(input_shape[1])
    builder = getattr(keras.applications, _spec(name).builder)
    return builder(include_top=False, weights=None, input_shape=(height, width, 3),
                   pooling="avg")


def backbone_classifier(
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    *,
    weights_path: Optional[str] = None,
    fine_tune: str = HEAD,
    fine_tune_blocks: int = 1,
    lora_rank: int = 4,
) -> keras.Model:
    """A keras.applications backbone (pretrained from a local file) under a zero Dense head.

    Args:
      name: a key of BACKBONES ("resnet50v2", "mobilenetv3small", "mobilenetv3large",
        "efficientnetv2b0", "convnexttiny").
      input_shape: (height, width, channels) of images in [0, 1]; one channel is repeated
        to three. At least 32 x 32 pixels.
      num_classes: the head's outputs (logits).
      weights_path: keras.applications' "no top" weights file for this backbone, or a
        `.weights.h5` saved from it. None: random weights, NOT pretrained (a warning says so).
      fine_tune: "head" (the backbone frozen), "last_blocks" (its last `fine_tune_blocks`
        blocks train, BatchNormalization excepted) or "lora" (those blocks' Dense and
        convolution kernels train through Keras's LoRA of rank `lora_rank`; grouped and
        depthwise convolutions stay frozen).
      fine_tune_blocks: how many of the last blocks train ("last_blocks", "lora").
      lora_rank: LoRA's rank ("lora").

    Returns:
      A functional model; its layer `name` is the backbone (a nested model) and "head" the
      head. `model.fine_tuning` is `set_fine_tuning`'s FineTuning and `model.backbone_pretrained`
      is True when weights were loaded from a file.

    Raises:
      ValueError: an unknown backbone or mode, an input that is not an image, or weights
        that are missing or are not this backbone's (the message says where to get them).
    """
    spec = _spec(name)
    if fine_tune not in FINE_TUNE_MODES:
        raise ValueError(f"fine_tune={fine_tune!r}; choose one of {', '.join(FINE_TUNE_MODES)}.")
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 3 or shape[2] not in (1, 3):
        raise ValueError(f"The {spec.builder} backbone takes images (height, width, 1 or 3 "
                         f"channels); got input shape {shape}.")
    backbone = build_backbone(name, shape)
    backbone.name = name  # the nested model's layer name in the classifier
    if weights_path is not None:
        load_backbone_weights(name, backbone, weights_path)
    else:
        _warn_random(name)
    blocks = backbone_blocks(name, backbone)
    if fine_tune == LORA:
        blocks = [[layer for layer in block if not _grouped(layer)] for block in blocks]
    tuning = set_fine_tuning(backbone, fine_tune, blocks, num_blocks=fine_tune_blocks,
                             lora_rank=lora_rank)
    inputs = keras.Input(shape)
    x = inputs
    if shape[2] == 1:  # grayscale: the same channel as red, green and blue
        x = keras.layers.Concatenate(axis=-1, name="grayscale_to_rgb")([x, x, x])
    x = keras.layers.Rescaling(spec.input_scale, spec.input_offset, name="backbone_input")(x)
    features = backbone(x)
    # From zero: the first DP steps start from a uniform prediction, not a random one.
    logits = keras.layers.Dense(num_classes, kernel_initializer="zeros", name="head")(features)
    model = keras.Model(inputs, logits, name=f"{name}_{fine_tune}")
    model.fine_tuning = tuning
    model.backbone_pretrained = weights_path is not None
    return model


def weights_provenance(weights_path: str) -> str:
    """The weights file's name and SHA-256 (no folder: records must not carry local paths)."""
    digest = hashlib.sha256()
    with open(weights_path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return f"{os.path.basename(weights_path)} (sha256 {digest.hexdigest()[:16]})"


def backbone_statement(name: str, fine_tune: str, weights_path: Optional[str],
                       fine_tune_blocks: int = 1, lora_rank: int = 4) -> str:
    """The privacy statement's paragraph on the backbone: which, how fine-tuned, which weights."""
    spec = _spec(name)
    what = {"head": "frozen; only the Dense head is trained, with DP",
            "last_blocks": f"its last {fine_tune_blocks} block(s) and the Dense head are "
                           "trained with DP (BatchNormalization kept frozen on its "
                           "pretrained statistics)",
            "lora": f"its last {fine_tune_blocks} block(s) are fine-tuned with DP through "
                    f"LoRA of rank {lora_rank} (the pretrained kernels frozen), with the "
                    "Dense head (BatchNormalization kept frozen)"}[fine_tune]
    text = f"Backbone: keras.applications {spec.builder} ({name}), fine_tune={fine_tune}: {what}."
    if weights_path is None:
        return text + (" Its weights are RANDOM: the backbone is NOT pretrained (no "
                       "--backbone_weights file was given).")
    source = weights_provenance(weights_path)
    return text + (f" Pretrained weights loaded from a local file, {source}; their pretraining "
                   "(keras.applications' files: ImageNet) is public data outside this run and "
                   "costs no privacy of this data set, provided that data held none of this "
                   "data set's examples, which tfdp cannot check.")
