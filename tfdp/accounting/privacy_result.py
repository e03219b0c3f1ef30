"""The record `compute_epsilon` returns: the guarantee, the labelled side figures, the words."""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

from tfdp.accounting.record import RecordMethods


@dataclasses.dataclass(frozen=True)
class PrivacyResult(RecordMethods):
    """What a training run's privacy accounting says, in numbers and in words.

    Attributes:
      epsilon: the formal (epsilon, delta)-DP guarantee for one privacy unit
        (add-or-remove-one-unit adjacency, or replace-one for shuffled batches; every
        intermediate model released), or
        `math.inf` when the method has no formal guarantee. The unit is one
        example, or one group of examples (e.g. a patient) with `privacy_unit`.
      epsilon_noisy_steps_only: epsilon composed over the noisy steps only. For
        the random noise schedule with released noiseless steps this is the
        dynamic-DP paper's convention and NOT a guarantee; for a planning
        figure of the drop variant it is an estimate from the expected count.
        Equal to `epsilon` for the regular schedule.
      delta: the delta of the guarantee.
      accountant: "rdp" or "pld", the dp_accounting accountant used.
      statement: plain-language text: mechanism, sampling assumption, what is
        and is not covered.
      mechanism, noise_schedule, noise_probability, on_skip, sampling: the
        settings accounted for.
      noise_multiplier: the multiplier as set on the optimizer.
      accounted_noise_multiplier: the one composed (half of it with
        microbatching, whose sensitivity is twice the clip).
      num_examples, batch_size, sampling_probability: data size, (expected)
        batch size and q = batch_size / num_examples, all counted in privacy units
        (groups, e.g. patients, when `privacy_unit` is not "example").
      steps: training steps taken or planned (noisy + noiseless + dropped).
      accounted_steps: how many noisy releases per example `epsilon` composes
        (None when epsilon is infinite for lack of noise).
      epsilon_assuming_poisson: for sampling="shuffle", the figure that assumes
        Poisson sampling, labelled as not a guarantee for shuffled batches;
        None for sampling="poisson".
      privacy_unit: what one unit of the guarantee is: "example", or the name
        of a group (e.g. "patient") whose examples are sampled, clipped and
        accounted together (user-level DP).
      secret_randomness: True when the noise and the sampling came from secret
        randomness (the default); False when `insecure_reproducible_seed` made them
        reproducible, so the guarantee holds only against someone who does not know
        that seed (the statement says so).
      adjacency: which data sets `epsilon` calls neighbours: "add-or-remove-one"
        (Poisson sampling) or "replace-one" (shuffled fixed-size batches, whose
        accounted multiplier is half the set one: a replaced example moves its unit by
        up to twice the clip).
      bands: mechanism="banded_mf" only: b, the strategy's bands and the cyclic
        Poisson folds (then `sampling_probability` is the fold's rate B * b / n and
        `accounted_steps` the participations ceil(steps / b)).
      floating_point_safe: True when the noise was added on a grid (no leak through
        floating-point low-order bits); epsilon and delta then include the samplers'
        arithmetic excess when the number of noised coordinates was known.
    """

    epsilon: float
    epsilon_noisy_steps_only: float
    delta: float
    accountant: str
    statement: str
    mechanism: str = "gaussian"
    noise_schedule: str = "regular"
    noise_probability: float = 1.0
    on_skip: str = "release"
    sampling: str = "poisson"
    noise_multiplier: Optional[float] = None
    accounted_noise_multiplier: Optional[float] = None
    used_microbatching: bool = False
    num_examples: Optional[int] = None
    batch_size: Optional[float] = None
    sampling_probability: Optional[float] = None
    steps: Optional[int] = None
    noisy_steps: Optional[int] = None
    accounted_steps: Optional[int] = None
    epsilon_assuming_poisson: Optional[float] = None
    privacy_unit: str = "example"
    secret_randomness: bool = True
    floating_point_safe: bool = False
    adjacency: str = "add-or-remove-one"
    bands: Optional[int] = None

    @property
    def is_guarantee(self) -> bool:
        """True when `epsilon` is finite, i.e. a formal DP guarantee holds."""
        return math.isfinite(self.epsilon)

