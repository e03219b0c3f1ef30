"""What a tfdp sampler promises about its batches, attached to the dataset it returns.

`poisson_batches` tags its dataset with a `SamplingTag` (population, expected batch size,
unit, whether the randomness is secret). `make_private` models read the tag in `fit`
and refuse an optimizer or a `PrivacyCallback` that states other facts, so a wrong data
size or batch size cannot silently understate epsilon. A dataset derived from a tagged
one (`.map`, `.prefetch`, ...) is a new object without the tag: it is not known to be
Poisson sampled any more.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

_ATTRIBUTE = "_tfdp_sampling_tag"


@dataclasses.dataclass(frozen=True)
class SamplingTag:
    """The sampling facts of a tfdp dataset's batches.

    Attributes:
      num_units: examples n, or groups G when `grouped`.
      batch_size: the expected batch size b (groups per batch when grouped); q = b / n.
      grouped: True when whole groups are sampled (user-level DP).
      steps_per_pass: batches in one pass over the dataset.
      secret_randomness: False when `insecure_reproducible_seed` drew the batches.
    """

    num_units: int
    batch_size: float
    grouped: bool
    steps_per_pass: int
    secret_randomness: bool = True

    @property
    def unit_name(self) -> str:
        """"groups" or "examples", for messages."""
        return "groups" if self.grouped else "examples"


def tag_dataset(dataset: Any, tag: SamplingTag) -> Any:
    """`dataset`, tagged with `tag` (returned for chaining)."""
    setattr(dataset, _ATTRIBUTE, tag)
    return dataset


def sampling_tag(dataset: Any) -> Optional[SamplingTag]:
    """The `SamplingTag` a tfdp sampler attached to `dataset`, or None (not known)."""
    return getattr(dataset, _ATTRIBUTE, None)
