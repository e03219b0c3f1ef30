"""Privacy units larger than one example: group ids (e.g. patients) per training example.

    count_groups(groups)                 number of distinct ids
    group_codes(groups)                  ids -> 0..G-1 per example, and G
    synthetic_groups(n, ...)             seeded pseudo-patients for data without patient ids
    patient_id_from_filename(name)       the patient behind a chest X-ray file name
                                         (Kermany et al., Kaggle chest-xray-pneumonia)
"""

from __future__ import annotations

import os
import re
from typing import Any, Optional, Tuple

import numpy as np

from tfdp._validation import check_positive_int

# Pneumonia images: person<patient>_<bacteria|virus>_<image>.jpeg.
_PERSON_PATTERN = re.compile(r"^(person\d+)_(?:bacteria|virus)_\d+\.(?i:jpe?g|png)$")
# Normal images: IM-<patient>-<image>[-<part>].jpeg, with a NORMAL2- prefix in a later batch.
_IM_PATTERN = re.compile(r"^((?:NORMAL\d+-)?IM-\d+)-\d+(?:-\d+)?\.(?i:jpe?g|png)$")
PATIENT_FILE_PATTERNS = "personN_bacteria_M / personN_virus_M / IM-NNNN-MMMM / NORMAL2-IM-NNNN-MMMM"


def group_codes(groups: Any) -> Tuple[np.ndarray, int]:
    """Maps one id per example (ints or strings) to int64 codes 0..G-1, returning (codes, G).

    Raises:
      ValueError: if `groups` is not 1-D, is empty, or mixes id types that cannot be sorted.
    """
    ids = np.asarray(groups)
    if ids.ndim != 1:
        raise ValueError(
            f"`groups` must be 1-D (one id per example), got shape {ids.shape}."
        )
    if len(ids) == 0:
        raise ValueError("`groups` is empty; give one id per example.")
    try:
        _, codes = np.unique(ids, return_inverse=True)
    except TypeError:
        raise ValueError(
            "`groups` mixes ids that cannot be compared (e.g. None among strings); give "
            "every example an id of one type (all ints or all strings)."
        ) from None
    codes = codes.reshape(-1).astype(np.int64)
    return codes, int(codes.max()) + 1


def count_groups(groups: Any) -> int:
    """Number of distinct ids in `groups` (one id per example): G, the number of privacy units."""
    return group_codes(groups)[1]


def synthetic_groups(
    num_examples: int, *, min_size: int = 1, max_size: int = 5, seed: int = 0
) -> np.ndarray:
    """Pseudo-patient ids for data without patient ids: int64 ids 0..G-1, one per example.

    A seeded permutation of the examples is cut into consecutive runs whose sizes
    are drawn uniformly from [min_size, max_size] (the last run may be shorter);
    each run is one pseudo-patient. Useful to exercise and measure per-group
    training; it gives no guarantee about real patients, whose images it does not know.
    """
    num_examples = check_positive_int("num_examples", num_examples)
    min_size = check_positive_int("min_size", min_size)
    max_size = check_positive_int("max_size", max_size)
    if max_size < min_size:
        raise ValueError(
            f"`max_size` ({max_size}) must be at least `min_size` ({min_size})."
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(num_examples)
    # Enough runs to cover every example even if each has the smallest size.
    sizes = rng.integers(min_size, max_size + 1, size=-(-num_examples // min_size))
    ends = np.minimum(np.cumsum(sizes), num_examples)
    starts = np.concatenate([[0], ends[:-1]])
    run_of_position = np.repeat(np.arange(len(sizes)), ends - starts)
    ids = np.empty(num_examples, np.int64)
    ids[order] = run_of_position
    return ids


def patient_id_from_filename(name: str) -> Optional[str]:
    """The patient id in a file name of the public pediatric chest X-ray collection, or None.

    The collection of Kermany et al. (Kaggle "chest-xray-pneumonia") names files
    `person123_bacteria_456.jpeg` / `person1_virus_6.jpeg` (patient "person123" /
    "person1"), `IM-0115-0001.jpeg` (patient "IM-0115"), and `NORMAL2-IM-0135-0001.jpeg`
    or `NORMAL2-IM-1427-0001-0002.jpeg` (patient "NORMAL2-IM-0135" / "NORMAL2-IM-1427").
    A path is reduced to its file name; the extension (.jpeg/.jpg/.png) may be in any case.
    """
    base = os.path.basename(str(name))
    for pattern in (_PERSON_PATTERN, _IM_PATTERN):
        match = pattern.match(base)
        if match:
            return match.group(1)
    return None
