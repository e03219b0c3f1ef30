"""Named data augmentations for augmentation multiplicity (`make_private(augment=...)`).

Each is a weightless Keras model of random preprocessing layers that transforms every
example on its own (no mixing of examples, so per-example clipping still bounds one
example's influence) and keeps the input shape. The names are what `--augmentation`
accepts.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import keras

NONE = "none"
# name -> what it does (the --augmentation flag's help).
AUGMENTATIONS: Dict[str, str] = {
    NONE: "no augmentation",
    "shift": "random translation by up to 1/8 of the image per axis (zero fill)",
    "flip_shift": "random horizontal flip, then the shift (natural images; not for digits)",
}


def augmentation_names() -> Tuple[str, ...]:
    """The names `make_augmentation` accepts."""
    return tuple(AUGMENTATIONS)


def make_augmentation(name: str, input_shape: Sequence[int],
                      seed: Optional[int] = None) -> Optional[keras.Model]:
    """The named augmentation for inputs of `input_shape` (None for "none").

    Raises ValueError for an unknown name, or an image augmentation on inputs that are
    not images (height, width, channels).
    """
    if name not in AUGMENTATIONS:
        raise ValueError(f"Unknown augmentation {name!r}; choose one of "
                         f"{', '.join(AUGMENTATIONS)}.")
    if name == NONE:
        return None
    shape = tuple(input_shape)
    if len(shape) != 3:
        raise ValueError(f"--augmentation={name} needs image inputs (height, width, channels), "
                         f"got shape {shape}; use --augmentation=none for tabular data.")
    layers = []
    if name == "flip_shift":
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    layers.append(keras.layers.RandomTranslation(0.125, 0.125, fill_mode="constant", seed=seed))
    return keras.Sequential([keras.Input(shape), *layers], name=f"augment_{name}")
