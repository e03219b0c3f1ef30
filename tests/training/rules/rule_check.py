"""The brute-force reference every layer rule is tested against.

`check_against_brute_force` trains nothing: it computes, for one batch, each example's
gradient norm and the sum of clipped per-example gradients twice, through the fast
path (`tfdp.training.clipped_gradient_sum`: rules, local fallback, Jacobian) and by a
Python loop over examples with one GradientTape each, and asserts they agree. It also
returns the fast path's plan so a test can assert that its layer took a rule.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

import tfdp


def loss_fn():
    """A per-example loss (reduction=None) for integer class labels and logits."""
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)


def _rows(x: Any, start: int, count: int) -> Any:
    return tf.nest.map_structure(lambda t: t[start:start + count], x)


def brute_force(model: keras.Model, loss, x, y, clip: float, kind: str,
                sample_weight: Optional[np.ndarray] = None, unit_size: int = 1):
    """(norms [U], clipped sums in model.trainable_variables order) by a loop over units.

    A unit is `unit_size` consecutive rows; its gradient is that of its rows' mean loss.
    """
    batch = len(y) // unit_size
    variables = model.trainable_variables
    norms, sums = [], [np.zeros(v.shape, np.float64) for v in variables]
    for b in range(batch):
        start = b * unit_size
        with tf.GradientTape() as tape:
            out = model(_rows(x, start, unit_size), training=True)
            value = loss(y[start:start + unit_size], out)
            if sample_weight is not None:
                value = value * tf.constant(sample_weight[start:start + unit_size], value.dtype)
            value = tf.reduce_sum(value) / unit_size
        grads = tape.gradient(value, [v.value for v in variables],
                              unconnected_gradients=tf.UnconnectedGradients.ZERO)
        grads = [np.asarray(tf.convert_to_tensor(g), np.float64) for g in grads]
        if kind == "l2":
            norm = np.sqrt(sum(np.sum(g ** 2) for g in grads))
        else:
            norm = sum(np.sum(np.abs(g)) for g in grads)
        norms.append(norm)
        factor = clip / max(norm, clip)
        for s, g in zip(sums, grads):
            s += factor * g
    return np.array(norms), sums


def check_against_brute_force(
    make_model,
    x,
    y,
    *,
    kinds: Sequence[str] = ("l2", "l1"),
    clip: Optional[float] = None,
    sample_weight: Optional[np.ndarray] = None,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    seed: int = 1,
    unit_size: int = 1,
) -> Dict[str, str]:
    """Asserts fast-path norms and clipped sums equal the brute-force loop; returns the plan.

    `clip` defaults to the median brute-force norm, so that some examples are clipped
    and some are not. The plan maps each layer's name to "rule:<Rule>", "local" or
    "jacobian" (layers without trainable weights are absent). With `unit_size` K each
    K consecutive rows are one unit (K augmentations of an example, a group's examples).
    """
    keras.utils.set_random_seed(seed)
    model = make_model()
    loss = loss_fn()
    plan = None
    for kind in kinds:
        ref_norms, ref_sums = brute_force(model, loss, x, y, clip or 1.0, kind, sample_weight,
                                          unit_size)
        c = clip if clip is not None else float(np.median(ref_norms))
        if clip is None:
            ref_norms, ref_sums = brute_force(model, loss, x, y, c, kind, sample_weight,
                                              unit_size)
        weighted = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight)
        weighted = weighted.reshape(-1, unit_size).sum(axis=1)
        assert np.all(ref_norms[weighted != 0] > 0), "every weighted example must have a gradient"
        result = tfdp.training.clipped_gradient_sum(model, loss, x, y, clip=c, kind=kind,
                                                    sample_weight=sample_weight,
                                                    unit_size=unit_size)
        np.testing.assert_allclose(result.norms, ref_norms, rtol=rtol, atol=atol,
                                   err_msg=f"{kind} per-example norms")
        largest = max(np.abs(want).max() for want in ref_sums)
        for v, got, want in zip(model.trainable_variables, result.clipped_sum, ref_sums):
            # Relative to the variable's own scale, floored at 1e-3 of the largest: a gradient
            # that is exactly zero (a key bias under softmax) is compared at round-off level.
            scale = max(np.abs(want).max(), 1e-3 * largest, 1e-12)
            np.testing.assert_allclose(np.asarray(got) / scale, want / scale, rtol=rtol, atol=atol,
                                       err_msg=f"{kind} clipped sum of {v.path}")
        plan = result.plan
    return plan
