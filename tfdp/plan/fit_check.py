"""Refuses a `fit` whose data, DP optimizer and `PrivacyCallback` state different privacy facts.

The facts epsilon depends on (data size, expected batch size, unit, sampling) can be given
to the sampler, the optimizer and the callback separately; a `make_private` model's `fit`
calls `check_fit` first, so a contradiction stops training before any step instead of
understating epsilon. The sampler's `SamplingTag` is the truth where there is one; data
without it is not known to be Poisson sampled, so only the shuffled-batch figure (what
plain `model.fit` batches provably are) may be reported for it.
"""

from __future__ import annotations

import math
from typing import Any, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from tfdp.accounting.callback import PrivacyCallback
from tfdp.data.sampling_tag import SamplingTag, check_bands_match, sampling_tag
from tfdp.mechanisms import NO_NOISE, Sampling


def check_fit(model: Any, x: Any, batch_size: Optional[int],
              callbacks: Optional[Sequence[Any]]) -> None:
    """Raises ValueError when `x`'s sampling, the model's DP optimizer and the
    `PrivacyCallback`s in `callbacks` disagree on a privacy fact; does nothing for a
    model without a tfdp DP optimizer (its train step says what is missing)."""
    optimizer = getattr(model, "optimizer", None)
    settings = getattr(optimizer, "dp_settings", None)
    if settings is None:
        return
    privacy_callbacks = _privacy_callbacks(callbacks)
    for callback in privacy_callbacks:
        callback.check_model(model)
    tag = sampling_tag(x)
    if tag is not None:
        _check_tagged(tag, model, settings, privacy_callbacks)
    elif settings.get("mechanism") != NO_NOISE:
        _check_untagged(x, batch_size, privacy_callbacks)


def _privacy_callbacks(callbacks) -> List[PrivacyCallback]:
    if callbacks is None:
        return []
    if isinstance(callbacks, (list, tuple)):
        return [c for c in callbacks if isinstance(c, PrivacyCallback)]
    listed = getattr(callbacks, "callbacks", [])  # a keras CallbackList
    return [c for c in listed if isinstance(c, PrivacyCallback)]


def _same(a: float, b: float) -> bool:
    return math.isclose(float(a), float(b), rel_tol=1e-9)


def _check_tagged(tag: SamplingTag, model: Any, settings: dict,
                  callbacks: List[PrivacyCallback]) -> None:
    if settings.get("mechanism") != NO_NOISE:
        # Banded DP-MF needs cyclic Poisson batches over its bands; other mechanisms plain ones.
        check_bands_match(tag, settings.get("bands"))
    expected = settings.get("expected_batch_size")
    if expected is not None and not _same(expected, tag.batch_size):
        raise ValueError(
            f"The optimizer's expected_batch_size is {expected:g}, but these batches were "
            f"sampled at {tag.batch_size:g} {tag.unit_name} per step (q = "
            f"{tag.batch_size:g} / {tag.num_units}): the update and the epsilon would both "
            f"be wrong. Give the optimizer expected_batch_size={tag.batch_size:g}, or use a "
            "tfdp.PrivacyPlan, which states it once.")
    options = getattr(model, "step_options", None)
    if options is not None and bool(options.grouped) != tag.grouped:
        raise ValueError(
            ("These batches sample whole groups (poisson_batches(..., groups=ids)) but the "
             "model clips each example: make it with make_private(model, grouped=True).")
            if tag.grouped else
            ("The model clips groups (make_private(..., grouped=True)) but these batches "
             "sample examples: build them with poisson_batches(..., groups=ids)."))
    for callback in callbacks:
        # Reproducible batches make the statement say so, whatever the noise's key.
        callback.observe_sampling(tag)
        if callback.sampling != Sampling.POISSON:
            raise ValueError(
                f"PrivacyCallback(sampling={callback.sampling!r}) on Poisson-sampled batches: "
                "the shuffled-batch figure assumes each example at most once per pass, which "
                "Poisson sampling does not give. Use sampling='poisson' (the default).")
        if callback.num_examples != tag.num_units:
            raise ValueError(
                f"PrivacyCallback was told {callback.num_examples} {tag.unit_name}, but the "
                f"batches are sampled from {tag.num_units}: its epsilon would be for another "
                f"data set. Give it num_examples={tag.num_units}, or use a tfdp.PrivacyPlan.")
        if callback.batch_size is not None and not _same(callback.batch_size, tag.batch_size):
            raise ValueError(
                f"PrivacyCallback was told batch_size={callback.batch_size:g}, but the "
                f"batches are sampled at {tag.batch_size:g}: leave batch_size out (the "
                "optimizer's expected_batch_size is used) or give the sampled one.")


def _check_untagged(x: Any, batch_size: Optional[int],
                    callbacks: List[PrivacyCallback]) -> None:
    for callback in callbacks:
        if callback.sampling == Sampling.POISSON:
            raise ValueError(
                "PrivacyCallback reports a Poisson-sampling epsilon, but these batches are "
                "not known to be Poisson sampled: they did not come from "
                "tfdp.data.poisson_batches as it returned them (a .map or .batch applied "
                "afterwards makes a new dataset; use make_private(..., augment=) for "
                "augmentation). Train on tfdp.data.poisson_batches (or a tfdp.PrivacyPlan's "
                "batches), or, for model.fit's shuffled fixed-size batches, pass "
                "sampling='shuffle' (a replace-one guarantee without amplification).")
        rows = _num_rows(x)
        if rows is not None and callback.num_examples != rows:
            raise ValueError(
                f"PrivacyCallback was told {callback.num_examples} examples, but fit is "
                f"given {rows}: give it num_examples={rows}.")
        given = batch_size if batch_size is not None else 32  # model.fit's default
        if (rows is not None and callback.batch_size is not None
                and not _same(callback.batch_size, given)):
            raise ValueError(
                f"PrivacyCallback was told batch_size={callback.batch_size:g}, but fit "
                f"takes batches of {given}: give it batch_size={given}.")


def _num_rows(x: Any) -> Optional[int]:
    """The number of examples of in-memory arrays; None for a dataset or generator."""
    if x is None or isinstance(x, (tf.data.Dataset, tf.distribute.DistributedDataset)):
        return None
    leaves = tf.nest.flatten(x)
    if leaves and all(isinstance(leaf, (np.ndarray, tf.Tensor)) for leaf in leaves):
        shape = leaves[0].shape
        return int(shape[0]) if len(shape) else None
    return None
