"""calibrate_noise_multiplier: the smallest noise multiplier that meets a target epsilon."""

from __future__ import annotations

import math
from typing import Callable, Optional

import dp_accounting

from tfdp._validation import check_choice, check_positive, check_positive_int, check_probability
from tfdp.accounting import counting
from tfdp.accounting.epsilon import (
    accounted_multiplier,
    check_accountant,
    check_delta,
    check_sizes,
)
from tfdp.accounting.events import (
    DEFAULT_PLD_DISCRETIZATION,
    composed_event,
    epsilon_of,
    make_accountant,
)
from tfdp.mechanisms import (
    Accountant,
    NoiseSchedule,
    OnSkip,
    Sampling,
    get_mechanism,
    mechanism_names,
    values,
)

# Search range for the multiplier; below the floor a target is "no privacy to speak of".
_SMALLEST_MULTIPLIER = 1e-2
_LARGEST_MULTIPLIER = 1e4


def calibrate_noise_multiplier(
    target_epsilon: float,
    delta: float,
    num_examples: int,
    batch_size: float,
    epochs: Optional[float] = None,
    *,
    steps: Optional[int] = None,
    mechanism: str = "gaussian",
    noise_schedule: str = NoiseSchedule.REGULAR,
    noise_probability: float = 1.0,
    on_skip: str = OnSkip.RELEASE,
    accountant: Optional[str] = None,
    sampling: str = Sampling.POISSON,
    used_microbatching: bool = False,
    tolerance: float = 1e-4,
    value_discretization_interval: float = DEFAULT_PLD_DISCRETIZATION,
    bands: Optional[int] = None,
) -> float:
    """The smallest noise multiplier whose planned training meets `target_epsilon`.

    Uses `dp_accounting.calibrate_dp_mechanism` (Brent's method) on the same
    events `compute_epsilon` composes, so `compute_epsilon` with the returned
    multiplier (and the same settings, `epochs=` or `steps=`) gives a figure <=
    target_epsilon, within `tolerance` of the smallest such multiplier. Which
    figure: for the regular schedule, the guarantee `epsilon`. For the random
    schedule, `epsilon_noisy_steps_only` of the plan, composed over the expected
    noisy count ceil(p x steps): with on_skip="release" that is the dynamic-DP
    paper's convention and NOT a guarantee (the formal epsilon is inf); with
    on_skip="drop" the guarantee after training composes over the realized noisy
    steps, which the optimizer's ledger records (`PrivacyCallback`).

    Args:
      target_epsilon: epsilon to reach, > 0.
      delta: in (0, 1).
      num_examples, batch_size: the data size and (expected) batch size.
      epochs / steps: exactly one: passes over the data (steps = ceil(epochs * n / b)),
        or the training steps actually planned (e.g. Keras's epochs * ceil(n / b)).
      mechanism: a registered noise mechanism ("gaussian" or "laplace").
      noise_schedule, noise_probability, on_skip: as for `compute_epsilon`.
      accountant: None (RDP for Gaussian, PLD for Laplace), "rdp" or "pld".
      sampling: "poisson", or "shuffle" to calibrate the shuffled-batch guarantee
        (replace-one adjacency, no amplification by subsampling).
      used_microbatching: the returned multiplier is the optimizer's setting;
        the accountant composes half of it (doubled sensitivity), as it does for
        sampling="shuffle".
      tolerance: absolute precision of the multiplier.
      value_discretization_interval: PLD grid.
      bands: mechanism="banded_mf" only (required there): calibrated through
        `tfdp.accounting.calibrate_banded_mf_noise` (ceil(steps / b) participations at
        q = batch_size * b / num_examples).

    Returns:
      The noise multiplier (noise std or scale over the clip).

    Raises:
      ValueError: on bad arguments, or a target outside what multipliers in
        [0.01, 10000] reach.
    """
    check_choice("mechanism", mechanism, mechanism_names())
    if mechanism == "banded_mf" or bands is not None:
        return _calibrate_banded(target_epsilon, delta, num_examples, batch_size, epochs, steps,
                                 mechanism, noise_schedule, accountant, sampling,
                                 used_microbatching, tolerance, bands)
    check_choice("sampling", sampling, values(Sampling))
    check_choice("noise_schedule", noise_schedule, values(NoiseSchedule))
    check_choice("on_skip", on_skip, values(OnSkip))
    noise_probability = check_probability("noise_probability", noise_probability)
    if noise_schedule == NoiseSchedule.REGULAR and noise_probability != 1.0:
        raise ValueError(
            "`noise_probability` applies to noise_schedule='random'; with 'regular' every "
            f"step is noisy, so leave it at 1.0 (got {noise_probability})."
        )
    if noise_probability == 0.0:
        raise ValueError("noise_probability=0 never adds noise: no multiplier reaches a target.")
    target_epsilon = check_positive("target_epsilon", target_epsilon)
    delta = check_delta(delta)
    num_examples, batch_size = check_sizes(num_examples, batch_size)
    if (epochs is None) == (steps is None):
        raise ValueError("Give exactly one of `epochs` (passes over the data) or `steps`.")
    if epochs is not None:
        epochs = check_positive("epochs", epochs)
    else:
        steps = check_positive_int("steps", steps)
    accountant = check_accountant(accountant, mechanism)
    tolerance = check_positive("tolerance", tolerance)
    if not isinstance(used_microbatching, bool):
        raise ValueError(f"`used_microbatching` must be True or False, got {used_microbatching!r}.")

    if sampling == Sampling.POISSON:
        count = (steps if steps is not None
                 else counting.steps_from_epochs(epochs, num_examples, batch_size))
        sampling_probability: Optional[float] = batch_size / num_examples
    else:
        count = (counting.passes_from_steps(steps, num_examples, batch_size)
                 if steps is not None else max(1, counting.ceil_count(epochs)))
        sampling_probability = None
    if noise_schedule == NoiseSchedule.RANDOM:
        # The noisy-steps-only figure's count, exactly as compute_epsilon plans it.
        count = counting.noisy_only_count(
            count, noise_schedule=noise_schedule, noise_probability=noise_probability,
            noisy_steps=None, delta=delta).count
    def make_event(multiplier: float) -> dp_accounting.DpEvent:
        accounted = accounted_multiplier(multiplier, used_microbatching, sampling)
        return composed_event(mechanism, accounted, sampling_probability, count)

    def gap(multiplier: float) -> float:
        return epsilon_of(
            make_event(multiplier), delta, accountant, value_discretization_interval
        ) - target_epsilon

    if accountant == Accountant.PLD and Accountant.RDP in get_mechanism(mechanism).accountants:
        # Bracket with the fast RDP answer: RDP's bound is looser, so PLD needs no more noise.
        start = calibrate_noise_multiplier(
            target_epsilon, delta, num_examples, batch_size, epochs, steps=steps,
            mechanism=mechanism, noise_schedule=noise_schedule,
            noise_probability=noise_probability, on_skip=on_skip, accountant=Accountant.RDP,
            sampling=sampling, used_microbatching=used_microbatching, tolerance=tolerance,
        )
        lower, upper = _bracket(gap, start, shrink=0.85)
    else:
        lower, upper = _bracket(gap, 1.0, shrink=0.5)

    multiplier = dp_accounting.calibrate_dp_mechanism(
        lambda: make_accountant(accountant, value_discretization_interval),
        make_event,
        target_epsilon,
        delta,
        bracket_interval=dp_accounting.ExplicitBracketInterval(lower, upper),
        tol=tolerance,
    )
    return float(multiplier)


def _calibrate_banded(target_epsilon, delta, num_examples, batch_size, epochs, steps,
                      mechanism, noise_schedule, accountant, sampling, used_microbatching,
                      tolerance, bands) -> float:
    """calibrate_noise_multiplier for mechanism="banded_mf" (refusing what it cannot account)."""
    from tfdp.accounting.banded_mf import calibrate_banded_mf_noise  # pylint: disable=import-outside-toplevel
    from tfdp.accounting.epsilon import _check_banded  # pylint: disable=import-outside-toplevel

    if mechanism != "banded_mf":
        raise ValueError(f"`bands` is for mechanism='banded_mf'; drop it with "
                         f"mechanism={mechanism!r}.")
    num_examples, batch_size = check_sizes(num_examples, batch_size)
    if (epochs is None) == (steps is None):
        raise ValueError("Give exactly one of `epochs` (passes over the data) or `steps`.")
    if steps is None:
        steps = counting.steps_from_epochs(check_positive("epochs", epochs), num_examples,
                                           batch_size)
    steps = check_positive_int("steps", steps)
    bands = _check_banded(mechanism, bands, sampling, noise_schedule, used_microbatching,
                          num_examples, batch_size, steps)
    return calibrate_banded_mf_noise(target_epsilon, check_delta(delta), num_examples,
                                     batch_size, steps, bands,
                                     accountant=check_accountant(accountant, mechanism),
                                     tolerance=tolerance)


def _bracket(gap: Callable[[float], float], start: float, shrink: float):
    """(lower, upper) with gap(lower) > 0 >= gap(upper), searched from `start`."""
    upper = start
    while gap(upper) > 0:
        upper *= 2.0
        if upper > _LARGEST_MULTIPLIER:
            raise ValueError(
                "target_epsilon is out of reach: even a noise multiplier of "
                f"{_LARGEST_MULTIPLIER:g} exceeds it. Raise target_epsilon or delta, or "
                "train for fewer steps."
            )
    lower = upper * shrink
    while gap(lower) <= 0:
        upper, lower = lower, lower * shrink
        if lower < _SMALLEST_MULTIPLIER:
            raise ValueError(
                "target_epsilon is so large that a noise multiplier below "
                f"{_SMALLEST_MULTIPLIER:g} meets it; such a target promises no meaningful "
                "privacy. Choose a smaller target_epsilon."
            )
    if not math.isfinite(lower) or not math.isfinite(upper):
        raise ValueError("Could not bracket the noise multiplier for this target.")
    return lower, upper
