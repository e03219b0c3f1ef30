"""A public prior for 8x8 digits: CNNs pretrained on synthetic digits, frozen, under a DP head.

Public pretraining is the largest single lever on accuracy under DP (De et al., 2022; Tramer
and Boneh, 2021): the private data then only trains a small head, on features that already
separate the classes. No public digit data can be downloaded here, so the prior is pretrained
on digits rendered from matplotlib's fonts (`tfdp.data.render_digits`). It reads no private
example, so it costs no privacy.

    pretrained_linear(input_shape=(8, 8, 1), num_classes=10)   frozen features + zero head
    prior_linear(input_shape, num_classes)     the prior for 8x8x1 digits, normalized_linear
                                               for any other input (the recipe's model)
    prior_linear(..., fine_tune="last_blocks" | "lora")   the prior's last blocks fine-tuned
                                               with DP too (`prior_last_blocks`, `prior_lora`)
    public_digits_weights()                                    the extractors' weights
    prior_statement()                                          what a privacy statement says

The features are those of `PRETRAIN["extractors"]` small CNNs pretrained with different seeds,
side by side: one extractor's quality varies with its pretraining seed by about a point of
DP accuracy, the ensemble's much less. The default weights ship with tfdp
(`models/public_digits_prior.npz`, rebuilt by `python scripts/pretrain_prior.py`), so nothing
is pretrained at run time; other settings are pretrained once (a minute or so per extractor
on two cores) and cached in this process and on disk (`$TFDP_CACHE_DIR`, default
~/.cache/tfdp), keyed by every setting and the Keras version.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple

import keras
import numpy as np

from tfdp._validation import check_positive_int
from tfdp.training.fine_tuning import HEAD, LAST_BLOCKS, LORA, FineTuning, set_fine_tuning

# Pretraining settings: fixed on synthetic data only, before the private data was used.
PRETRAIN: Dict[str, object] = dict(
    num_examples=40000, epochs=8, elastic=60.0, extractors=4, feature_units=128,
    batch_size=128, learning_rate=1e-3)
_VERSION = 2  # bump when the renderer or the network changes: old caches are then ignored
DIGITS_SHAPE = (8, 8, 1)
BUNDLED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "public_digits_prior.npz")
PUBLIC_PRIOR_STATEMENT = (
    "Public prior: the model's feature extractors were pretrained before this run on "
    "{num_examples} synthetic digits each, rendered from the fonts bundled with matplotlib "
    "(tfdp.data.render_digits; no private example was read), and {trained} "
    "Pretraining on public data costs no privacy.")
_HEAD_ONLY = "are frozen; only the final layer is trained, with DP."
# The prior's blocks, in the order the data meets them: each spans every extractor (the
# extractors run side by side), so "the last block" is every extractor's feature layer.
PRIOR_BLOCKS: Tuple[Tuple[str, ...], ...] = (
    ("conv1", "conv2", "pool1"), ("conv3", "pool2"), ("flatten", "features"))
_LAYER_WORDS = {"conv1": "first convolution", "conv2": "second convolution",
                "conv3": "third convolution", "features": "dense feature layer"}


def _standardize(name: str = "per_image_standardization") -> keras.layers.Layer:
    # Each image on its own scale (its own mean and spread): no statistic of any data set.
    return keras.layers.LayerNormalization(axis=(1, 2, 3), center=False, scale=False,
                                           epsilon=1e-6, name=name)


def _feature_layers(feature_units: int, seed: int, trainable: bool) -> List[keras.layers.Layer]:
    """One extractor's layers, in order; `seed` makes its pretraining repeatable."""
    def init(i):
        return keras.initializers.GlorotUniform(seed=seed * 100 + i)
    conv = dict(kernel_size=3, padding="same", activation="relu", trainable=trainable)
    tag = f"public{seed}"
    return [
        keras.layers.Conv2D(32, kernel_initializer=init(1), name=f"{tag}_conv1", **conv),
        keras.layers.Conv2D(32, kernel_initializer=init(2), name=f"{tag}_conv2", **conv),
        keras.layers.MaxPool2D(2, name=f"{tag}_pool1"),
        keras.layers.Conv2D(64, kernel_initializer=init(3), name=f"{tag}_conv3", **conv),
        keras.layers.MaxPool2D(2, name=f"{tag}_pool2"),
        keras.layers.Flatten(name=f"{tag}_flatten"),
        keras.layers.Dense(feature_units, activation="relu", kernel_initializer=init(4),
                           trainable=trainable, name=f"{tag}_features"),
    ]


def _pretrain(settings: dict, seed: int) -> List[np.ndarray]:
    """One extractor pretrained on synthetic digits (images drawn with `seed`)."""
    from tfdp.data.synthetic_digits import render_digits

    images, labels = render_digits(settings["num_examples"], seed=seed,
                                   elastic=settings["elastic"])
    features = _feature_layers(settings["feature_units"], seed, trainable=True)
    network = keras.Sequential(
        [keras.Input(shape=DIGITS_SHAPE), _standardize(),
         # Shifts fill with 0 after standardizing: the images' own middle grey.
         keras.layers.RandomTranslation(0.125, 0.125, fill_mode="constant", seed=seed),
         *features, keras.layers.Dropout(0.3, seed=seed),
         keras.layers.Dense(10, kernel_initializer=keras.initializers.GlorotUniform(seed=seed))])
    network.compile(keras.optimizers.Adam(settings["learning_rate"]),
                    keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    order = np.random.default_rng(seed)
    for _ in range(settings["epochs"]):  # our own shuffles: no global random state is touched
        perm = order.permutation(len(images))
        network.fit(images[perm], labels[perm], batch_size=settings["batch_size"], epochs=1,
                    shuffle=False, verbose=0)
    return [np.asarray(w) for layer in features for w in layer.get_weights()]


def _key(settings: dict) -> str:
    return json.dumps({**settings, "version": _VERSION}, sort_keys=True)


def _read(path: str, key: str) -> Tuple[np.ndarray, ...]:
    """The weights stored at `path` for these settings, or () if absent, stale or damaged."""
    try:
        with np.load(path) as stored:
            if str(stored["settings"]) != key:
                return ()
            return tuple(stored[f"w{i}"] for i in range(len(stored.files) - 1))
    except (OSError, ValueError, KeyError):
        return ()


def write_weights(path: str, settings: dict, weights: Sequence[np.ndarray]) -> None:
    """Stores `weights` with their settings; atomic, so no process reads half a file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".npz")
    with os.fdopen(handle, "wb") as out:
        np.savez(out, settings=np.array(_key(settings)),
                 **{f"w{i}": w for i, w in enumerate(weights)})
    os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide a shipped file from other users
    os.replace(tmp, path)


def pretrain_weights(settings: dict) -> Tuple[np.ndarray, ...]:
    """Every extractor pretrained afresh (seeds 0, 1, ...), weights concatenated in order."""
    weights: List[np.ndarray] = []
    for seed in range(int(settings["extractors"])):
        weights += _pretrain(settings, seed)
    return tuple(weights)


@functools.lru_cache(maxsize=4)
def _weights(key: str) -> Tuple[np.ndarray, ...]:
    settings = json.loads(key)
    settings.pop("version")
    weights = _read(BUNDLED, key)
    if weights:
        return weights
    root = os.environ.get("TFDP_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache",
                                                            "tfdp")
    cached = os.path.join(root, "public_digits_"
                          f"{hashlib.sha256((key + keras.__version__).encode()).hexdigest()[:16]}.npz")
    weights = _read(cached, key)
    if weights:
        return weights
    weights = pretrain_weights(settings)
    try:
        write_weights(cached, settings, weights)
    except OSError:
        pass  # a read-only home: the in-process cache still holds them
    return weights


def public_digits_weights(**overrides: object) -> Tuple[np.ndarray, ...]:
    """The frozen extractors' weights for the `PRETRAIN` settings (with `overrides`).

    The defaults ship with tfdp; other settings (tests use a small `num_examples`) are
    pretrained once and cached.
    """
    unknown = set(overrides) - set(PRETRAIN)
    if unknown:
        raise ValueError(f"Unknown pretraining settings {sorted(unknown)}; "
                         f"known: {sorted(PRETRAIN)}.")
    settings = {**PRETRAIN, **overrides}
    for name in ("num_examples", "epochs", "extractors", "feature_units"):
        check_positive_int(name, settings[name])
    return _weights(_key(settings))


# The prior's design (renderer and pretraining settings) was developed while measuring DP
# accuracy on the bundled digits, so on that data set it is tuning that touched the data.
DESIGNED_ON = "digits"


def prior_statement(dataset: str = "", model: Optional[keras.Model] = None,
                    **pretrain_overrides: object) -> str:
    """The privacy statement's paragraph on the public prior (the pretraining data).

    It says what trains with DP: the final layer only, or (given a fine-tuned `model`)
    which of the extractors' blocks, or their LoRA factors, train with it. On
    `DESIGNED_ON` it adds that the prior's design was developed with that data in view.
    """
    trained = _HEAD_ONLY if model is None else _trained_words(model)
    text = PUBLIC_PRIOR_STATEMENT.format(**{**PRETRAIN, **pretrain_overrides}, trained=trained)
    if dataset == DESIGNED_ON:
        text += (" Its design (the renderer and pretraining settings) was developed while "
                 "measuring accuracy on these digits, so like the hyperparameters it is "
                 "tuning whose cost epsilon does not include.")
    return text


def _prior_layers(model: keras.Model) -> List[keras.layers.Layer]:
    """The extractors' layers in `model` (named public<seed>_<layer>)."""
    return [layer for layer in model.layers if re.fullmatch(r"public\d+_\w+", layer.name)]


def prior_fine_tuning(model: keras.Model) -> FineTuning:
    """What of the prior's extractors trains in `model`: mode "head" when nothing does."""
    trained = [layer for layer in _prior_layers(model) if layer.trainable_weights]
    count = sum(int(np.prod(w.shape)) for layer in trained for w in layer.trainable_weights)
    lora = any("lora_kernel" in w.path for layer in trained for w in layer.trainable_weights)
    mode = HEAD if not trained else LORA if lora else LAST_BLOCKS
    return FineTuning(mode, tuple(layer.name for layer in trained), count)


def _trained_words(model: keras.Model) -> str:
    """The statement's words on what of the extractors trains with DP."""
    tuning = prior_fine_tuning(model)
    if tuning.mode == HEAD:
        return _HEAD_ONLY
    kinds = list(dict.fromkeys(name.split("_", 1)[1] for name in tuning.trained_layers))
    depth = max(len(PRIOR_BLOCKS) - i for i, block in enumerate(PRIOR_BLOCKS)
                for kind in kinds if kind in block)
    blocks = "the last block" if depth == 1 else f"the last {depth} blocks"
    words = [_LAYER_WORDS[kind] for kind in kinds]
    layers = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
    where = f"{blocks} of every extractor (its {layers})"
    if tuning.mode == LORA:
        ranks = sorted({int(layer.lora_rank) for layer in _prior_layers(model)
                        if layer.name in tuning.trained_layers})
        return (f"keep their pretrained weights, frozen; LoRA factors of rank "
                f"{'/'.join(map(str, ranks))} on {where}, {tuning.trainable_parameters:,} "
                "weights, and the final layer are trained with DP on the private data, so "
                "those layers' outputs depend on it.")
    return (f"were then fine-tuned with DP on the private data: {where}, "
            f"{tuning.trainable_parameters:,} weights, and the final layer are trained with "
            "DP; the earlier blocks are frozen.")


def _is_digits(input_shape: Sequence[int]) -> bool:
    return tuple(int(d) for d in input_shape) == DIGITS_SHAPE


def pretrained_linear(input_shape: Sequence[int] = DIGITS_SHAPE, num_classes: int = 10, *,
                      name: str = "pretrained_linear", fine_tune: str = HEAD,
                      fine_tune_blocks: int = 1, lora_rank: int = 4,
                      **pretrain_overrides: object) -> keras.Model:
    """A linear head from zero on frozen features pretrained on public synthetic digits.

    Each image is standardized on its own, goes through every frozen extractor, and the
    concatenated features (standardized per example) feed one trainable Dense layer that
    starts from zero: DP-SGD noises only `extractors * 128 * num_classes + num_classes`
    weights. The extractors were pretrained on digits rendered from fonts
    (`tfdp.data.render_digits`), never on private data: a public prior that costs no
    privacy. For 8x8x1 images (the bundled digits) only.

    `fine_tune` ("head", "last_blocks" or "lora", see `tfdp.training.set_fine_tuning`)
    also trains the last `fine_tune_blocks` of `PRIOR_BLOCKS` (each spans every
    extractor), or LoRA factors of rank `lora_rank` on their Dense and convolution layers.
    """
    if not _is_digits(input_shape):
        raise ValueError(
            f"pretrained_linear's features were pretrained on 8x8x1 digits, got inputs of "
            f"shape {tuple(input_shape)}. Use 'normalized_linear' (no pretraining) for other "
            "data.")
    settings = {**PRETRAIN, **pretrain_overrides}
    weights = iter(public_digits_weights(**pretrain_overrides))
    image = keras.Input(shape=DIGITS_SHAPE, name="image")
    standardized = _standardize()(image)
    branches = []
    for seed in range(int(settings["extractors"])):
        h = standardized
        for layer in _feature_layers(int(settings["feature_units"]), seed, trainable=False):
            h = layer(h)
            layer.set_weights([next(weights) for _ in layer.get_weights()])
        branches.append(h)
    features = (keras.layers.Concatenate(name="public_features")(branches)
                if len(branches) > 1 else branches[0])
    features = keras.layers.LayerNormalization(center=False, scale=False, epsilon=1e-6,
                                               name="feature_standardization")(features)
    logits = keras.layers.Dense(check_positive_int("num_classes", num_classes),
                                kernel_initializer="zeros", name="logits")(features)
    model = keras.Model(image, logits, name=name)
    fine_tune_prior(model, fine_tune, num_blocks=fine_tune_blocks, lora_rank=lora_rank)
    return model


def prior_blocks(model: keras.Model) -> List[List[keras.layers.Layer]]:
    """The prior's blocks in `model` (`PRIOR_BLOCKS`), each with every extractor's layers."""
    seeds = sorted({int(layer.name[len("public"):].split("_")[0])
                    for layer in _prior_layers(model)})
    return [[model.get_layer(f"public{seed}_{kind}") for seed in seeds for kind in block]
            for block in PRIOR_BLOCKS]


def fine_tune_prior(model: keras.Model, mode: str, *, num_blocks: int = 1,
                    lora_rank: int = 4) -> FineTuning:
    """`set_fine_tuning` on the prior's extractors in `model` (the head stays trainable)."""
    blocks = prior_blocks(model)
    return set_fine_tuning([layer for block in blocks for layer in block], mode, blocks,
                           num_blocks=num_blocks, lora_rank=lora_rank)


def prior_linear(input_shape: Sequence[int] = DIGITS_SHAPE, num_classes: int = 10, *,
                 name: str = "prior_linear", fine_tune: str = HEAD, fine_tune_blocks: int = 1,
                 lora_rank: int = 4) -> keras.Model:
    """`pretrained_linear` where tfdp ships a public prior for the input, else `normalized_linear`.

    The choice reads only the input's shape (public): 8x8x1 images (the bundled digits)
    get the frozen features pretrained on synthetic digits; any other input gets logistic
    regression on each example's standardized features. `has_public_prior(model)` says
    which, and a run's privacy statement says so when the prior is used. `fine_tune`,
    `fine_tune_blocks` and `lora_rank` are `pretrained_linear`'s; fine-tuning needs the
    prior, so it is refused for other inputs.
    """
    if _is_digits(input_shape):
        return pretrained_linear(input_shape, num_classes, name=name, fine_tune=fine_tune,
                                 fine_tune_blocks=fine_tune_blocks, lora_rank=lora_rank)
    if fine_tune != HEAD:
        raise ValueError(
            f"fine_tune={fine_tune!r} fine-tunes tfdp's public digits prior, which exists "
            f"for 8x8x1 images only; got inputs of shape {tuple(input_shape)}. Use "
            "'prior_linear' (logistic regression on standardized features there) or a "
            "pretrained backbone for this data.")
    from tfdp.models.mlp import normalized_linear

    return normalized_linear(input_shape, num_classes, name=name)


def prior_last_blocks(input_shape: Sequence[int] = DIGITS_SHAPE, num_classes: int = 10, *,
                      name: str = "prior_last_blocks", fine_tune_blocks: int = 1
                      ) -> keras.Model:
    """The digits prior with its last block (every extractor's feature layer) fine-tuned too."""
    return prior_linear(input_shape, num_classes, name=name, fine_tune=LAST_BLOCKS,
                        fine_tune_blocks=fine_tune_blocks)


def prior_lora(input_shape: Sequence[int] = DIGITS_SHAPE, num_classes: int = 10, *,
               name: str = "prior_lora", fine_tune_blocks: int = 1, lora_rank: int = 4
               ) -> keras.Model:
    """The digits prior with LoRA factors (rank 4) on its last block, trained with the head."""
    return prior_linear(input_shape, num_classes, name=name, fine_tune=LORA,
                        fine_tune_blocks=fine_tune_blocks, lora_rank=lora_rank)


def has_public_prior(model: keras.Model) -> bool:
    """True when `model` holds the extractors of tfdp's public digits prior (fine-tuned or not)."""
    return any(re.fullmatch(r"public\d+_features", layer.name) for layer in model.layers)
