"""Grouped batches in the private train step: a group (e.g. a patient) as the privacy unit.

`tfdp.data.poisson_batches(x, y, b, groups=ids)` samples groups, not examples, and yields
x [groups, slots, ...], y [groups, slots, ...] and sample weights [groups, slots]: a group's
examples fill its first slots (weight slots / n_taken), empty slots are zeros (weight 0).
The train step flattens the slots into rows, group-major, so that every group is one run
of `slots` consecutive rows, which `clipped_sum(unit_size=...)` clips as one unit: the mean
of the weighted row losses over the slots is the group's mean loss, and its gradient is
what is clipped. Empty slots have weight 0, so they add exactly nothing.
"""

from __future__ import annotations

from typing import Any, Optional

import tensorflow as tf

GROUPED_LAYOUT = (
    "x [groups, slots, ...], y [groups, slots, ...] and sample weights [groups, slots], as "
    "tfdp.data.poisson_batches(x, y, batch_size, groups=ids) yields them"
)


def group_slots(x: Any, sample_weight: Any) -> int:
    """The static slot count S of a grouped batch; ValueError when the batch is not grouped."""
    if sample_weight is None or getattr(sample_weight, "shape", None) is None \
            or sample_weight.shape.rank != 2:
        raise ValueError(
            f"make_private(..., grouped=True) trains on grouped batches: {GROUPED_LAYOUT}. "
            "This batch has no [groups, slots] sample weights; build the batches with "
            "`groups=`, or drop grouped=True for example-level DP.")
    slots = sample_weight.shape[1]
    if slots is None:
        raise ValueError("Grouped batches need a static slot count (the second axis of the "
                         "sample weights); tfdp.data.poisson_batches(groups=...) gives one.")
    for leaf in tf.nest.flatten(x):
        if leaf.shape.rank is None or leaf.shape.rank < 2 or leaf.shape[1] not in (None, slots):
            raise ValueError(f"Grouped batches need {GROUPED_LAYOUT}; got x of shape "
                             f"{leaf.shape} with sample weights of shape {sample_weight.shape}.")
    return int(slots)


def flatten_groups(nest: Any, grouped: bool) -> Any:
    """[groups, slots, ...] -> [groups * slots, ...] for every tensor of `nest` (grouped only)."""
    if not grouped:
        return nest

    def flat(t: Optional[tf.Tensor]) -> Optional[tf.Tensor]:
        if t is None:
            return None
        shape = tf.shape(t)
        return tf.reshape(t, tf.concat([[shape[0] * shape[1]], shape[2:]], axis=0))

    return tf.nest.map_structure(flat, nest)


def looks_grouped(model_input_rank: Optional[int], x: Any, sample_weight: Any) -> bool:
    """True when an example-level step receives a grouped batch (one axis too many)."""
    first = tf.nest.flatten(x)[0]
    rank = getattr(getattr(first, "shape", None), "rank", None)
    return (model_input_rank is not None and rank == model_input_rank + 1
            and sample_weight is not None and getattr(sample_weight, "shape", None) is not None
            and sample_weight.shape.rank == 2)
