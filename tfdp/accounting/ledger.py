"""Epsilon from a DP optimizer's ledger: the one path the callback, the run and scripts share."""

from __future__ import annotations

from typing import Any, Dict, Optional

import keras

from tfdp.accounting.epsilon import check_delta, check_privacy_unit, compute_epsilon
from tfdp.accounting.privacy_result import PrivacyResult
from tfdp.mechanisms import NO_NOISE, NoiseSchedule, OnSkip, Sampling, mechanism_names

# What a tfdp DP optimizer exposes for accounting.
LEDGER_ATTRIBUTES = ("noisy_steps", "dropped_steps", "largest_batch_size", "dp_settings",
                     "iterations")


def check_dp_optimizer(optimizer: Any, who: str = "Accounting") -> Any:
    """`optimizer` when it is a tfdp DP optimizer whose query tfdp can account for; else ValueError."""
    missing = [name for name in LEDGER_ATTRIBUTES if not hasattr(optimizer, name)]
    if optimizer is None or missing:
        raise ValueError(
            f"{who} needs a model compiled with a tfdp DP optimizer "
            "(tfdp.DPKerasSGDOptimizer, DPKerasAdamOptimizer, DPKerasAdagradOptimizer), "
            f"whose ledger it reads; got {type(optimizer).__name__}"
            + (f" without {missing}." if optimizer is not None else ".")
        )
    mechanism = optimizer.dp_settings.get("mechanism")
    if mechanism not in (*mechanism_names(), NO_NOISE):
        raise ValueError(
            f"{who} cannot account for this optimizer's dp_sum_query (mechanism "
            f"{mechanism!r}): tfdp accounts for the registered mechanisms {mechanism_names()} "
            "and no-noise queries. Compute epsilon for a custom query with dp_accounting."
        )
    return optimizer


def read_ledger(optimizer: Any) -> Dict[str, int]:
    """The optimizer's counters as ints: steps (applied + dropped), applied, noisy, dropped."""
    def count(variable) -> int:
        return int(keras.ops.convert_to_numpy(variable))

    applied, dropped = count(optimizer.iterations), count(optimizer.dropped_steps)
    return {
        "steps": applied + dropped,
        "applied_steps": applied,
        "noisy_steps": count(optimizer.noisy_steps),
        "dropped_steps": dropped,
        "largest_batch_size": count(optimizer.largest_batch_size),
    }


def ledger_batch_size(optimizer: Any, ledger: Dict[str, int],
                      batch_size: Optional[float] = None) -> Optional[float]:
    """The batch size to account with: given, else expected_batch_size, else the largest seen.

    The largest batch seen is an in-memory count (never saved): after a restore it misses
    the earlier steps and could understate the batch size, hence epsilon. The fallback is
    refused whenever the ledger holds steps this process did not see.
    """
    if batch_size is not None:
        return batch_size
    expected = optimizer.dp_settings.get("expected_batch_size")
    if expected:
        return expected
    seen = getattr(optimizer, "steps_in_this_process", None)
    seen = None if seen is None else int(keras.ops.convert_to_numpy(seen))
    if seen is None or ledger["steps"] > seen:
        raise ValueError(
            f"The optimizer's ledger holds {ledger['steps']} steps, but this process saw "
            f"{seen or 0} of them (it was restored from a checkpoint or file), and the largest "
            "batch size is kept in memory only, so it cannot give the batch size to account "
            "with (a smaller one would understate epsilon). Pass batch_size= (the batch size "
            "you trained with) to PrivacyCallback or epsilon_from_ledger, or build the "
            "optimizer with expected_batch_size=.")
    return ledger["largest_batch_size"] or None


def check_divides_by_expected_batch(optimizer: Any, sampling: str, who: str = "Accounting") -> None:
    """Refuses Poisson accounting of an optimizer that divides by the realized batch size.

    Without `expected_batch_size` (or microbatches, whose number is fixed) the noised sum
    is divided by the number of examples the batch happened to hold: a data-dependent
    release that Poisson-sampling accounting does not cover. No-noise optimizers pass
    (they claim no guarantee).
    """
    settings = optimizer.dp_settings
    if (sampling != Sampling.POISSON or settings.get("mechanism") == NO_NOISE
            or not settings.get("noise_multiplier")):
        return
    if settings.get("expected_batch_size") or settings.get("num_microbatches"):
        return
    raise ValueError(
        f"{who}: sampling='poisson', but the optimizer has no expected_batch_size, so it "
        "divides each noised sum by the realized batch size, which depends on the data; the "
        "Poisson accountant does not cover that. Build the optimizer with "
        "expected_batch_size=<the expected batch size> for batches from "
        "tfdp.data.poisson_batches (tfdp.run does), or pass sampling='shuffle' for "
        "model.fit's fixed-size shuffled batches.")


def epsilon_for_steps(
    optimizer: Any,
    num_examples: int,
    steps: int,
    noisy_steps: int,
    *,
    batch_size: Optional[float],
    delta: float = 1e-5,
    sampling: str = Sampling.POISSON,
    accountant: Optional[str] = None,
    privacy_unit: str = "example",
    secret_batches: bool = True,
) -> PrivacyResult:
    """`compute_epsilon` for the given counters under the optimizer's privacy settings.

    `secret_batches` False: the batches came from a reproducible seed (the sampler's
    `SamplingTag` says so), and the statement must not call the randomness secret.
    """
    settings = optimizer.dp_settings
    mechanism = settings["mechanism"]
    if mechanism != NO_NOISE and not settings.get("noise_multiplier"):
        mechanism = NO_NOISE  # a zero noise multiplier adds no noise: no privacy
    return compute_epsilon(
        num_examples,
        batch_size,
        settings.get("noise_multiplier"),
        steps=steps,
        delta=delta,
        mechanism=mechanism,
        noise_schedule=settings.get("noise_schedule", NoiseSchedule.REGULAR),
        noise_probability=settings.get("noise_probability", 1.0),
        on_skip=settings.get("on_skip", OnSkip.RELEASE),
        sampling=sampling,
        accountant=accountant,
        noisy_steps=noisy_steps,
        used_microbatching=bool(settings.get("used_microbatching", False)),
        privacy_unit=privacy_unit,
        secret_randomness=bool(settings.get("secret_randomness", True)) and secret_batches,
        floating_point_safe=bool(settings.get("floating_point_safe", False)),
        noised_coordinates=settings.get("noised_coordinates"),
        bands=settings.get("bands"),
    )


def epsilon_from_ledger(
    optimizer: Any,
    num_examples: int,
    *,
    delta: float = 1e-5,
    sampling: str = Sampling.POISSON,
    batch_size: Optional[float] = None,
    accountant: Optional[str] = None,
    privacy_unit: str = "example",
) -> PrivacyResult:
    """The privacy a DP optimizer's training has spent so far, read off its ledger.

    Args:
      optimizer: a tfdp DP optimizer (after or during training).
      num_examples: training examples n (groups, with a group `privacy_unit`).
      delta: the delta of the guarantee.
      sampling: "poisson" or "shuffle", as in `compute_epsilon`.
      batch_size: the (expected) batch size; default the optimizer's
        `expected_batch_size`, else the largest batch this process has seen (refused
        when the optimizer took steps before it was restored into this process).
      accountant: None (the mechanism's default), "rdp" or "pld".
      privacy_unit: "example", or the group's name (e.g. "patient"), as in
        `compute_epsilon`.

    Returns:
      A `PrivacyResult` over the ledger's steps and noisy steps; before any step,
      epsilon 0 ("No training step was taken.").

    Raises:
      ValueError: with sampling="poisson", for an optimizer that divides by the
        realized batch size (no `expected_batch_size`) and adds noise.
    """
    check_dp_optimizer(optimizer)
    ledger = read_ledger(optimizer)
    if ledger["steps"]:
        check_divides_by_expected_batch(optimizer, sampling, "epsilon_from_ledger")
    if ledger["steps"] == 0:
        settings = optimizer.dp_settings
        return PrivacyResult(
            epsilon=0.0, epsilon_noisy_steps_only=0.0, delta=check_delta(delta),
            accountant=accountant, statement="No training step was taken.",
            mechanism=settings["mechanism"],
            noise_schedule=settings.get("noise_schedule", NoiseSchedule.REGULAR),
            noise_probability=settings.get("noise_probability", 1.0),
            on_skip=settings.get("on_skip", OnSkip.RELEASE), sampling=sampling,
            noise_multiplier=settings.get("noise_multiplier"), num_examples=num_examples,
            steps=0, noisy_steps=0, privacy_unit=check_privacy_unit(privacy_unit, sampling),
        )
    return epsilon_for_steps(
        optimizer, num_examples, ledger["steps"], ledger["noisy_steps"],
        batch_size=ledger_batch_size(optimizer, ledger, batch_size), delta=delta,
        sampling=sampling, accountant=accountant, privacy_unit=privacy_unit,
    )
