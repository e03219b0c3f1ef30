"""`StepOptions`: what a private train step does besides clipping one example at a time.

Augmentation multiplicity (De et al., 2022: K augmented copies of each example whose mean
gradient is clipped once, so the sensitivity is one example's), physical batches (a
logical batch taken through the model in chunks, their clipped sums noised once) and
groups as the privacy unit (user-level DP: each group's mean gradient is clipped once).
Set by `tfdp.make_private`, saved with the model's config.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Optional, Tuple

import keras
import tensorflow as tf

from tfdp._validation import check_positive_int


@dataclasses.dataclass(frozen=True)
class StepOptions:
    """The private train step's augmentation and physical batch size (checked on creation).

    Attributes:
      augment: applied to each (repeated) training batch before the forward pass; must
        transform every example on its own and keep the input shape. None: no augmentation.
      augmentation_multiplicity: K copies of each example per step (1: the example itself,
        augmented when `augment` is given).
      physical_batch_size: at most this many examples (times K) through the model at once;
        None: the whole batch.
      grouped: the batches hold groups (e.g. patients), as `tfdp.data.poisson_batches(...,
        groups=...)` yields them: x [groups, slots, ...], y [groups, slots, ...] and sample
        weights [groups, slots] (0 on empty slots). Each group's gradient (of its mean
        loss) is clipped as one unit, so the DP guarantee is per group.
      training_metrics: True (Keras' convention): the train step updates and returns the
        loss and compiled metrics of every released step, computed from the private
        batches WITHOUT noise, so they are not covered by the DP guarantee. False: it
        returns none (fit then logs only validation metrics). A step the random schedule
        drops (on_skip="drop") never updates them.
    """

    augment: Optional[Callable[[Any], Any]] = None
    augmentation_multiplicity: int = 1
    physical_batch_size: Optional[int] = None
    grouped: bool = False
    training_metrics: bool = True

    def __post_init__(self):
        k = check_positive_int("augmentation_multiplicity", self.augmentation_multiplicity)
        if k > 1 and self.augment is None:
            raise ValueError(
                f"augmentation_multiplicity={k} needs an `augment` function (e.g. "
                "keras.Sequential([keras.layers.RandomTranslation(0.1, 0.1)])): K identical "
                "copies would give the same gradient as one.")
        if self.augment is not None and getattr(self.augment, "trainable_weights", None):
            raise ValueError(
                "`augment` has trainable weights; it runs outside the per-example gradient "
                "computation, so they would never be trained privately. Use a fixed "
                "(weightless) augmentation, e.g. Keras's Random* preprocessing layers.")
        if self.physical_batch_size is not None:
            check_positive_int("physical_batch_size", self.physical_batch_size)
        if not isinstance(self.grouped, bool):
            raise ValueError(f"`grouped` must be True or False, got {self.grouped!r}.")
        if not isinstance(self.training_metrics, bool):
            raise ValueError(
                f"`training_metrics` must be True or False, got {self.training_metrics!r}.")

    def expand(self, x: Any, y: Any, sample_weight: Any) -> Tuple[Any, Any, Any]:
        """Each example repeated K times (rows u*K .. u*K+K-1) and augmented, with its labels."""
        if self.augment is None:
            return x, y, sample_weight
        x, y, sample_weight = self.repeat((x, y, sample_weight))
        if isinstance(self.augment, keras.layers.Layer):
            x = self.augment(x, training=True)  # Keras's Random* layers, GaussianNoise
        else:
            x = self.augment(x)
        return x, y, sample_weight

    def repeat(self, nest: Any) -> Any:
        """Every tensor of `nest` with each row repeated K times (when augmenting)."""
        k = self.augmentation_multiplicity
        if self.augment is None or k == 1:
            return nest
        return tf.nest.map_structure(lambda t: None if t is None else tf.repeat(t, k, axis=0),
                                     nest)

    @property
    def unit_size(self) -> int:
        """Rows per example in the expanded batch."""
        return self.augmentation_multiplicity if self.augment is not None else 1

    def get_config(self) -> Dict[str, Any]:
        """The options as Keras config entries (the augmentation serialized)."""
        return {
            "augment": (None if self.augment is None
                        else keras.saving.serialize_keras_object(self.augment)),
            "augmentation_multiplicity": self.augmentation_multiplicity,
            "physical_batch_size": self.physical_batch_size,
            "grouped": self.grouped,
            "training_metrics": self.training_metrics,
        }

    @classmethod
    def pop_from_config(cls, config: Dict[str, Any], custom_objects=None) -> "StepOptions":
        """The options `get_config` wrote, removed from `config`."""
        augment = config.pop("augment", None)
        return cls(
            augment=None if augment is None else keras.saving.deserialize_keras_object(
                augment, custom_objects=custom_objects),
            augmentation_multiplicity=config.pop("augmentation_multiplicity", 1),
            physical_batch_size=config.pop("physical_batch_size", None),
            grouped=config.pop("grouped", False),
            training_metrics=config.pop("training_metrics", True))
