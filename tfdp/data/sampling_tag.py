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
import math
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
      bands: None for Poisson sampling; b for cyclic Poisson sampling over b folds
        (`cyclic_poisson_batches`, for mechanism="banded_mf"), each step's rate then
        batch_size * b / num_units within its fold.
    """

    num_units: int
    batch_size: float
    grouped: bool
    steps_per_pass: int
    secret_randomness: bool = True
    bands: Optional[int] = None

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


def check_accounting_matches(batches: Any, *, num_units: int, batch_size: float,
                             grouped: bool, sampling: str,
                             bands: Optional[int] = None) -> Optional[SamplingTag]:
    """Raises ValueError when the figures an epsilon is computed from contradict the
    sampler that made `batches`; returns its tag (None for untagged shuffled batches).

    A tagged dataset's population, expected batch size and unit are the truth; an untagged
    one is not known to be Poisson sampled, so only the shuffled-batch figure is allowed.
    """
    tag = sampling_tag(batches)
    if tag is None:
        if sampling == "poisson":
            raise ValueError(
                "These batches are not known to be Poisson sampled: they did not come from "
                "tfdp.data.poisson_batches as it returned them (a .map or .batch applied "
                "afterwards makes a new, untagged dataset). Account them with "
                "sampling='shuffle' (fixed-size shuffled batches: replace-one, no "
                "amplification), or train on tfdp.data.poisson_batches or a "
                "tfdp.PrivacyPlan's batches.")
        return None
    if sampling != "poisson":
        raise ValueError(
            f"sampling={sampling!r} for batches that tfdp.data.poisson_batches drew: the "
            "shuffled-batch figure assumes each example at most once per pass, which "
            "Poisson sampling does not give. Use sampling='poisson'.")
    check_bands_match(tag, bands)
    if int(num_units) != tag.num_units:
        raise ValueError(
            f"num_examples={num_units}, but the batches were sampled from {tag.num_units} "
            f"{tag.unit_name}: the epsilon would be for another data set. Give "
            f"num_examples={tag.num_units}, or use a tfdp.PrivacyPlan, which states it once.")
    if not math.isclose(float(batch_size), tag.batch_size, rel_tol=1e-9):
        raise ValueError(
            f"batch_size={batch_size:g}, but the batches were sampled at {tag.batch_size:g} "
            f"{tag.unit_name} per step: give batch_size={tag.batch_size:g}.")
    if bool(grouped) != tag.grouped:
        raise ValueError(
            ("These batches sample whole groups (poisson_batches(..., groups=ids)): give "
             "privacy_unit the group's name (e.g. 'patient') and the number of groups.")
            if tag.grouped else
            ("privacy_unit names a group, but these batches sample single examples: build "
             "them with poisson_batches(..., groups=ids), or use privacy_unit='example'."))
    return tag


def check_bands_match(tag: SamplingTag, bands: Optional[int]) -> None:
    """Refuses banded-MF accounting of plain Poisson batches and the reverse (or other folds)."""
    if tag.bands == bands:
        return
    if bands is None:
        raise ValueError(
            f"These batches were drawn by cyclic Poisson sampling over {tag.bands} folds "
            "(tfdp.data.cyclic_poisson_batches), for mechanism='banded_mf' with "
            f"bands={tag.bands}; this accounting assumes plain Poisson sampling. Account "
            f"them with mechanism='banded_mf', bands={tag.bands}.")
    if tag.bands is None:
        raise ValueError(
            f"mechanism='banded_mf' with bands={bands} is accounted under cyclic Poisson "
            "sampling, but these batches are plain Poisson batches: train on "
            f"tfdp.data.cyclic_poisson_batches(..., bands={bands}) (or a plan's batches).")
    raise ValueError(f"bands={bands}, but the batches were drawn over {tag.bands} folds: "
                     f"give bands={tag.bands}.")
