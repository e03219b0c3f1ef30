"""How many noisy releases one example can take part in: steps, passes, and planning counts."""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

from scipy import stats

from tfdp.names import NoiseSchedule, OnSkip

# Share of delta spent on "more noisy steps than planned" in drop-schedule planning.
PLANNING_DELTA_SHARE = 0.1


def ceil_count(value: float) -> int:
    """ceil(value), but an integer that floating point nudged up by a hair stays itself."""
    nearest = round(value)
    if abs(value - nearest) <= 1e-9 * max(1.0, abs(value)):
        return int(nearest)
    return int(math.ceil(value))


def steps_from_epochs(epochs: float, num_examples: int, batch_size: float) -> int:
    """Training steps of `epochs` passes at (expected) batch size: ceil(epochs * n / b)."""
    return max(1, ceil_count(epochs * num_examples / batch_size))


def passes_from_steps(steps: int, num_examples: int, batch_size: float) -> int:
    """Passes over shuffled data that `steps` fixed-size batches can start.

    A pass of batches of at most `batch_size` examples has at least
    floor(n / b) steps (floor: pipelines may drop the remainder), so `steps`
    steps touch at most ceil(steps / floor(n / b)) passes. Conservative: with
    model.fit's ceil(n / b) steps per epoch it can count one pass too many.
    """
    min_steps_per_pass = max(1, int(num_examples // batch_size))
    return int(math.ceil(steps / min_steps_per_pass))


def binomial_upper_count(trials: int, probability: float, tail: float) -> int:
    """Smallest k with P[Binomial(trials, probability) > k] <= tail."""
    if probability >= 1.0:
        return trials
    if probability <= 0.0:
        return 0
    return int(min(trials, stats.binom.ppf(1.0 - tail, trials, probability)))


@dataclasses.dataclass(frozen=True)
class Count:
    """How many noisy releases per example a figure composes, and at what delta.

    `count=None` means some release carried no noise: no finite epsilon.
    `kind` names where the count comes from, for the statement:
      "all" (every step noisy), "realized" (the training ledger), "upper"
      (binomial upper count for planning), "expected" (ceil(p * n), an
      estimate), "released" (a noiseless step was or may be released).
    """

    count: Optional[int]
    delta: float
    kind: str


def formal_count(
    opportunities: int,
    *,
    noise_schedule: str,
    noise_probability: float,
    on_skip: str,
    steps: int,
    noisy_steps: Optional[int],
    delta: float,
) -> Count:
    """The count behind the formal guarantee.

    `opportunities` is how many steps one example can be in: every step under
    Poisson sampling, one per pass with shuffled batches. `steps` and
    `noisy_steps` are the whole run's counts (noisy_steps None when planning).
    """
    if noise_schedule == NoiseSchedule.REGULAR:
        return Count(opportunities, delta, "all")
    if on_skip == OnSkip.RELEASE:
        if noisy_steps is not None:
            if noisy_steps == steps:  # the coin never came up noiseless
                return Count(opportunities, delta, "realized")
            return Count(None, delta, "released")
        if noise_probability >= 1.0:
            return Count(opportunities, delta, "all")
        return Count(None, delta, "released")
    # on_skip == "drop": dropped steps touch no data, so only noisy steps count.
    if noisy_steps is not None:
        return Count(min(opportunities, noisy_steps), delta, "realized")
    if noise_probability >= 1.0:
        return Count(opportunities, delta, "all")
    # Planning: each example's noisy count is Binomial(opportunities, p), independent
    # of the data. Compose over a count exceeded with probability <= tail and add
    # that tail to delta, which keeps the (epsilon, delta) guarantee exact.
    tail = PLANNING_DELTA_SHARE * delta
    upper = binomial_upper_count(opportunities, noise_probability, tail)
    return Count(upper, delta - tail, "upper")


def noisy_only_count(
    opportunities: int,
    *,
    noise_schedule: str,
    noise_probability: float,
    noisy_steps: Optional[int],
    delta: float,
) -> Count:
    """The count of the noisy-steps-only figure (the paper's convention for 'release')."""
    if noise_schedule == NoiseSchedule.REGULAR:
        return Count(opportunities, delta, "all")
    if noisy_steps is not None:
        return Count(min(opportunities, noisy_steps), delta, "realized")
    return Count(ceil_count(noise_probability * opportunities), delta, "expected")
