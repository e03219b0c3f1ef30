"""compute_epsilon: the (epsilon, delta) guarantee of a DP training run, with its statement."""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Optional

from tfdp._validation import (
    check_choice,
    check_positive,
    check_positive_int,
    check_probability,
)
from tfdp.accounting import counting, statement
from tfdp.accounting.events import DEFAULT_PLD_DISCRETIZATION, composed_event, epsilon_of
from tfdp.accounting.privacy_result import PrivacyResult
from tfdp.data.sampling_tag import check_accounting_matches
from tfdp.randomness import grid
from tfdp.mechanisms import (
    NO_NOISE,
    Accountant,
    NoiseSchedule,
    OnSkip,
    Sampling,
    get_mechanism,
    mechanism_names,
    values,
)


@dataclasses.dataclass(frozen=True)
class _Run:
    """Validated settings of one accounting request."""

    num_examples: int
    batch_size: float
    noise_multiplier: Optional[float]
    accounted_noise_multiplier: Optional[float]
    poisson_noise_multiplier: Optional[float]
    steps: int
    passes: int
    passes_from_steps: bool
    delta: float
    mechanism: str
    noise_schedule: str
    noise_probability: float
    on_skip: str
    sampling: str
    accountant: str
    noisy_steps: Optional[int]
    used_microbatching: bool
    value_discretization_interval: float
    bands: Optional[int] = None

    @property
    def sampling_probability(self) -> float:
        return self.batch_size / self.num_examples

    @property
    def banded(self) -> bool:
        """True for mechanism="banded_mf" (cyclic Poisson sampling over `bands` folds)."""
        return self.bands is not None

    @property
    def adjacency(self) -> str:
        """The neighbouring relation `.epsilon` holds for (see `accounted_multiplier`)."""
        return adjacency_for(self.sampling)


def adjacency_for(sampling: str) -> str:
    """"add-or-remove-one" under Poisson sampling, "replace-one" with shuffled batches.

    With fixed-size shuffled batches adding an example pushes another one out of its
    batch (and can add a step), so no add-or-remove guarantee follows from the batches'
    sensitivity; replacing one example changes exactly one unit of one step per pass.
    """
    return "replace-one" if sampling == Sampling.SHUFFLE else "add-or-remove-one"


def accounted_multiplier(noise_multiplier: float, used_microbatching: bool,
                         sampling: str) -> float:
    """The multiplier the accountant composes: the set one over the sensitivity in clips.

    Under add-or-remove-one (Poisson) one example moves the clipped sum by one clip, or
    by two when a unit (microbatch) holds several examples. Under replace-one (shuffled
    batches) the replaced example's unit moves by up to two clips either way.
    """
    doubled = used_microbatching or sampling == Sampling.SHUFFLE
    return noise_multiplier / 2 if doubled else noise_multiplier


def check_privacy_unit(privacy_unit, sampling: str = "poisson") -> str:
    """The privacy unit's name: "example", or a group's (e.g. "patient"), lower case."""
    if not isinstance(privacy_unit, str) or not re.fullmatch(r"[A-Za-z][A-Za-z_-]*",
                                                             privacy_unit.strip()):
        raise ValueError(
            "`privacy_unit` names what one unit of the guarantee is: 'example', or a group "
            f"such as 'patient' or 'user' (one word of letters); got {privacy_unit!r}.")
    privacy_unit = privacy_unit.strip().lower()
    if privacy_unit != "example" and sampling != Sampling.POISSON:
        raise ValueError(
            f"privacy_unit={privacy_unit!r} is accounted under Poisson sampling of the "
            "groups (tfdp.data.poisson_batches(..., groups=ids)); sampling='shuffle' has "
            "no group-level version here. Use sampling='poisson'.")
    return privacy_unit


def check_delta(delta) -> float:
    """delta as a float strictly between 0 and 1."""
    value = check_positive("delta", delta)
    if value >= 1:
        raise ValueError(f"`delta` must be in (0, 1), e.g. 1e-5 (below 1/num_examples); got {delta!r}.")
    return value


def check_sizes(num_examples, batch_size) -> tuple:
    """(num_examples, batch_size) checked: n a whole number >= 1, 0 < batch <= n."""
    num_examples = check_positive_int("num_examples", num_examples)
    batch_size = check_positive("batch_size", batch_size)
    if batch_size.is_integer():
        batch_size = int(batch_size)
    if batch_size > num_examples:
        raise ValueError(
            f"`batch_size` ({batch_size:g}) must not exceed `num_examples` ({num_examples}): "
            "a batch is drawn from the training data."
        )
    return num_examples, batch_size


def check_accountant(accountant, mechanism: str) -> str:
    """The accountant to use: the mechanism's default, or a valid explicit choice."""
    if accountant is not None:
        check_choice("accountant", accountant, values(Accountant))
    if mechanism == NO_NOISE:  # nothing to account; the figure is inf whatever reads it
        return str(accountant or Accountant.RDP)
    return str(get_mechanism(mechanism).check_accountant(accountant))


def check_noise_multiplier(noise_multiplier, mechanism: str) -> Optional[float]:
    """A noise multiplier > 0 for a private mechanism; ignored (None) for mechanism='none'."""
    if mechanism == NO_NOISE:
        return None
    if noise_multiplier is None:
        raise ValueError(f"mechanism={mechanism!r} needs `noise_multiplier`, a number > 0.")
    if not isinstance(noise_multiplier, bool) and noise_multiplier == 0:
        raise ValueError(
            f"`noise_multiplier` is 0, which adds no noise: mechanism={mechanism!r} needs a "
            "number > 0. For training without privacy use mechanism='none' (epsilon = inf)."
        )
    return check_positive("noise_multiplier", noise_multiplier)


def _validate(
    num_examples, batch_size, noise_multiplier, epochs, steps, delta, mechanism,
    noise_schedule, noise_probability, on_skip, sampling, accountant, noisy_steps,
    used_microbatching, value_discretization_interval, bands=None,
) -> _Run:
    check_choice("mechanism", mechanism, (*mechanism_names(), NO_NOISE))
    check_choice("noise_schedule", noise_schedule, values(NoiseSchedule))
    check_choice("on_skip", on_skip, values(OnSkip))
    check_choice("sampling", sampling, values(Sampling))
    num_examples, batch_size = check_sizes(num_examples, batch_size)
    delta = check_delta(delta)
    noise_probability = check_probability("noise_probability", noise_probability)
    if noise_schedule == NoiseSchedule.REGULAR and noise_probability != 1.0:
        raise ValueError(
            "`noise_probability` applies to noise_schedule='random'; with 'regular' every "
            f"step is noisy, so leave it at 1.0 (got {noise_probability})."
        )
    noise_multiplier = check_noise_multiplier(noise_multiplier, mechanism)
    accountant = check_accountant(accountant, mechanism)
    if not isinstance(used_microbatching, bool):
        raise ValueError(f"`used_microbatching` must be True or False, got {used_microbatching!r}.")
    value_discretization_interval = check_positive(
        "value_discretization_interval", value_discretization_interval
    )

    if (epochs is None) == (steps is None):
        raise ValueError("Give exactly one of `epochs` (passes over the data) or `steps`.")
    if steps is not None:
        steps = check_positive_int("steps", steps)
        passes = counting.passes_from_steps(steps, num_examples, batch_size)
    else:
        epochs = check_positive("epochs", epochs)
        steps = counting.steps_from_epochs(epochs, num_examples, batch_size)
        passes = max(1, counting.ceil_count(epochs))
    if noisy_steps is not None:
        if isinstance(noisy_steps, bool) or not hasattr(noisy_steps, "__index__"):
            raise ValueError(f"`noisy_steps` must be a whole number >= 0, got {noisy_steps!r}.")
        noisy_steps = int(noisy_steps)
        if not 0 <= noisy_steps <= steps:
            raise ValueError(
                f"`noisy_steps` must be between 0 and the number of steps ({steps}), got "
                f"{noisy_steps}. Pass the optimizer's ledger: noisy_steps=opt.noisy_steps, "
                "steps=opt.iterations + opt.dropped_steps."
            )

    bands = _check_banded(mechanism, bands, sampling, noise_schedule, used_microbatching,
                          num_examples, batch_size, steps)
    accounted = poisson = None
    if noise_multiplier is not None and mechanism != NO_NOISE:
        accounted = accounted_multiplier(noise_multiplier, used_microbatching, sampling)
        poisson = accounted_multiplier(noise_multiplier, used_microbatching, Sampling.POISSON)
    return _Run(
        num_examples=num_examples, batch_size=batch_size, noise_multiplier=noise_multiplier,
        accounted_noise_multiplier=accounted, poisson_noise_multiplier=poisson,
        steps=steps, passes=passes,
        passes_from_steps=epochs is None, delta=delta,
        mechanism=mechanism, noise_schedule=noise_schedule,
        noise_probability=noise_probability, on_skip=on_skip, sampling=sampling,
        accountant=accountant, noisy_steps=noisy_steps, used_microbatching=used_microbatching,
        value_discretization_interval=value_discretization_interval, bands=bands,
    )


BANDED_MF = "banded_mf"


def _check_banded(mechanism, bands, sampling, noise_schedule, used_microbatching,
                  num_examples, batch_size, steps) -> Optional[int]:
    """`bands` for mechanism="banded_mf" (required there, refused elsewhere), with its refusals."""
    if mechanism != BANDED_MF:
        if bands is not None:
            raise ValueError("`bands` is for mechanism='banded_mf' (correlated noise); drop it "
                             f"with mechanism={mechanism!r}.")
        return None
    from tfdp.data.cyclic_poisson import cyclic_sampling_probability  # pylint: disable=import-outside-toplevel

    if bands is None:
        raise ValueError("mechanism='banded_mf' needs `bands` (the strategy's diagonals and the "
                         "cyclic Poisson folds the batches were drawn from), e.g. bands=4.")
    bands = check_positive_int("bands", bands)
    if sampling != Sampling.POISSON:
        raise ValueError(
            "mechanism='banded_mf' is accounted under cyclic Poisson sampling "
            "(tfdp.data.cyclic_poisson_batches); shuffled batches have no such guarantee. "
            "Use sampling='poisson' with cyclic Poisson batches.")
    if noise_schedule != NoiseSchedule.REGULAR:
        raise ValueError("mechanism='banded_mf' adds noise every step: use "
                         "noise_schedule='regular'.")
    if used_microbatching:
        raise ValueError("mechanism='banded_mf' is accounted with one clipped gradient per "
                         "example: train without microbatches (used_microbatching=False).")
    if bands > steps:
        raise ValueError(f"bands={bands} exceeds the {steps} steps: a strategy for T steps has "
                         f"at most T bands. Use bands <= {steps}.")
    cyclic_sampling_probability(num_examples, batch_size, bands)  # refuses B * b > n
    return bands


def _epsilon(run: _Run, count: counting.Count, sampling_probability: Optional[float]) -> float:
    """Epsilon of `count` noisy releases (inf when a noiseless release happened).

    `sampling_probability` None is the shuffled-batch view (replace-one, one release
    per pass); a probability is the Poisson view (add-or-remove-one).
    """
    if run.mechanism == NO_NOISE or count.count is None:
        return math.inf
    multiplier = (run.poisson_noise_multiplier if sampling_probability is not None
                  else run.accounted_noise_multiplier)
    if run.banded:
        event = get_mechanism(run.mechanism).dp_event(
            multiplier, sampling_probability, count.count, bands=run.bands)
        return epsilon_of(event, count.delta, run.accountant, run.value_discretization_interval)
    event = composed_event(run.mechanism, multiplier, sampling_probability, count.count)
    return epsilon_of(event, count.delta, run.accountant, run.value_discretization_interval)


def _figures(run: _Run, opportunities: int, sampling_probability: Optional[float]):
    """(formal count, formal epsilon, noisy-only count, noisy-only epsilon) for one view."""
    common = dict(
        noise_schedule=run.noise_schedule,
        noise_probability=run.noise_probability,
        noisy_steps=run.noisy_steps,
        delta=run.delta,
    )
    formal = counting.formal_count(
        opportunities, on_skip=run.on_skip, steps=run.steps, **common
    )
    noisy_only = counting.noisy_only_count(opportunities, **common)
    epsilon = _epsilon(run, formal, sampling_probability)
    same = (noisy_only.count, noisy_only.delta) == (formal.count, formal.delta)
    if same or run.noise_schedule == NoiseSchedule.REGULAR or run.mechanism == NO_NOISE:
        epsilon_noisy_only = epsilon
    else:
        epsilon_noisy_only = _epsilon(run, noisy_only, sampling_probability)
    return formal, epsilon, noisy_only, epsilon_noisy_only


def compute_epsilon(
    num_examples: int,
    batch_size: float,
    noise_multiplier: Optional[float],
    *,
    epochs: Optional[float] = None,
    steps: Optional[int] = None,
    delta: float = 1e-5,
    mechanism: str = "gaussian",
    noise_schedule: str = "regular",
    noise_probability: float = 1.0,
    on_skip: str = "release",
    sampling: str = "poisson",
    accountant: Optional[str] = None,
    noisy_steps: Optional[int] = None,
    used_microbatching: bool = False,
    value_discretization_interval: float = DEFAULT_PLD_DISCRETIZATION,
    privacy_unit: str = "example",
    secret_randomness: bool = True,
    floating_point_safe: bool = False,
    noised_coordinates: Optional[int] = None,
    batches: Optional[Any] = None,
    bands: Optional[int] = None,
) -> PrivacyResult:
    """The (epsilon, delta) of DP-SGD training per example (or per group), with a statement.

    Args:
      num_examples: training examples n; with a group `privacy_unit`, the number of
        groups (e.g. patients).
      batch_size: (expected) batch size b; q = b / n is the Poisson sampling rate
        (groups per batch with a group `privacy_unit`).
      noise_multiplier: noise std / L2 clip (Gaussian) or noise scale / L1 clip
        (Laplace), as set on the optimizer. Must be > 0 for a private mechanism;
        ignored for mechanism="none".
      epochs / steps: exactly one. steps = ceil(epochs * n / b). For the random
        schedule, steps counts every step taken (noisy, released or dropped):
        the ledger's `iterations + dropped_steps`.
      delta: in (0, 1).
      mechanism: "gaussian" (RDP by default, PLD on request), "laplace" (PLD) or
        "none" (no privacy: epsilon = inf).
      noise_schedule: "regular" (noise every step) or "random" (noise with
        probability `noise_probability`).
      on_skip: random schedule only: "release" (a noiseless step releases the
        exact clipped gradient: formal epsilon = inf when p < 1; the paper's
        noisy-steps-only figure goes to `.epsilon_noisy_steps_only`, labelled as
        not a guarantee) or "drop" (composition over the noisy steps: the
        realized `noisy_steps` when given, else a planning figure over a
        binomial upper count whose tail probability is charged to delta).
      sampling: "poisson" (add-or-remove-one adjacency, amplified by sampling; use
        `tfdp.data.poisson_batches`) or "shuffle" (fixed-size shuffled batches:
        `.epsilon` holds for replace-one adjacency, sensitivity twice the clip,
        each example in one step per pass, no amplification; `.epsilon_assuming_poisson`
        is the Poisson figure, labelled as not a guarantee for these batches).
      accountant: None (mechanism's default), "rdp" or "pld".
      noisy_steps: the number of noisy steps from the optimizer's ledger.
      used_microbatching: True when gradient units held several examples: the
        sensitivity doubles, so the composition uses noise_multiplier / 2.
      value_discretization_interval: PLD grid; coarser is faster and gives a
        larger (still valid) epsilon.
      privacy_unit: "example" (example-level DP), or the name of the group whose
        examples were sampled and clipped together (e.g. "patient": user-level DP,
        `tfdp.data.poisson_batches(..., groups=ids)` and `make_private(model,
        grouped=True)`). The arithmetic is the same over groups; the statement and
        `PrivacyResult.privacy_unit` say which unit the epsilon protects.
      secret_randomness: False when the noise and the sampling were made reproducible
        from a seed (`insecure_reproducible_seed`): the statement then says that the
        guarantee holds only against someone who does not know that seed.
      floating_point_safe: True when the noise was added on a grid
        (`floating_point_safe_noise`): the mechanism is accounted as it stands, and the
        samplers' arithmetic adds at most 2 T d eta to epsilon and T d times a far-tail
        mass to delta (`tfdp.randomness.grid.excess_bound`; T steps, d noised
        coordinates). Both are added to the figures when `noised_coordinates` (d) is
        given; without it the statement gives the formula.
      noised_coordinates: d, the number of coordinates noised per step (the model's
        trainable parameters); the DP optimizer records it at its first step.
      batches: the dataset trained on (optional). When given, the figures above are
        checked against what its sampler recorded: data from `tfdp.data.poisson_batches`
        must agree on the data size, batch size and unit (and batches drawn from an
        insecure seed make the statement say so); other data is not known to be Poisson
        sampled and is refused with sampling="poisson".

    Returns:
      A `PrivacyResult`.

    Raises:
      ValueError: on any out-of-range or inconsistent argument, saying what is allowed.
    """
    run = _validate(
        num_examples, batch_size, noise_multiplier, epochs, steps, delta, mechanism,
        noise_schedule, noise_probability, on_skip, sampling, accountant, noisy_steps,
        used_microbatching, value_discretization_interval, bands,
    )
    privacy_unit = check_privacy_unit(privacy_unit, run.sampling)
    if run.banded and privacy_unit != "example":
        raise ValueError(
            f"privacy_unit={privacy_unit!r} is not available with mechanism='banded_mf': its "
            "folds are drawn per example, not per group. Use privacy_unit='example', or "
            "mechanism='gaussian' for a per-group guarantee.")
    if batches is not None:
        tag = check_accounting_matches(
            batches, num_units=run.num_examples, batch_size=run.batch_size,
            grouped=privacy_unit != "example", sampling=run.sampling, bands=run.bands)
        if tag is not None and not tag.secret_randomness:
            secret_randomness = False
    q = run.sampling_probability
    poisson = _figures(run, run.steps, q)
    if run.sampling == Sampling.POISSON:
        formal, epsilon, noisy_only, epsilon_noisy_only = poisson
        epsilon_assuming_poisson = None
    else:
        formal, epsilon, noisy_only, epsilon_noisy_only = _figures(run, run.passes, None)
        epsilon_assuming_poisson = poisson[1]

    delta = run.delta
    excess = None
    if floating_point_safe and run.mechanism != NO_NOISE and math.isfinite(epsilon):
        norm = get_mechanism(run.mechanism).clip_kind
        if noised_coordinates:
            excess = grid.excess_bound(int(noised_coordinates), run.steps, norm)
            epsilon += excess[0]
            epsilon_noisy_only += excess[0]
            delta += excess[1]
    paragraphs = [
        statement.mechanism_paragraph(
            run.mechanism, run.noise_multiplier, run.accounted_noise_multiplier,
            run.used_microbatching, run.accountant, adjacency=run.adjacency,
        ),
        statement.scope_paragraph(
            run.num_examples, run.batch_size, run.steps, run.delta,
            private=run.mechanism != NO_NOISE, privacy_unit=privacy_unit,
            adjacency=run.adjacency,
        ),
    ]
    if run.mechanism != NO_NOISE:
        if run.banded:
            paragraphs.append(statement.cyclic_poisson_paragraph(
                q * run.bands, run.bands, run.steps, -(-formal.count // run.bands)))
        elif run.sampling == Sampling.POISSON:
            paragraphs.append(statement.poisson_paragraph(q, privacy_unit))
        else:
            paragraphs.append(
                statement.shuffle_paragraph(
                    run.passes, epsilon, epsilon_assuming_poisson, run.passes_from_steps
                )
            )
        paragraphs.append(
            statement.schedule_paragraph(
                noise_schedule=run.noise_schedule,
                noise_probability=run.noise_probability,
                on_skip=run.on_skip,
                steps=run.steps,
                opportunities=run.steps if run.sampling == Sampling.POISSON else run.passes,
                per_pass=run.sampling == Sampling.SHUFFLE,
                formal=formal,
                noisy_only=noisy_only,
                epsilon_noisy_only=epsilon_noisy_only,
            )
        )
        paragraphs.append(statement.noise_sampler_paragraph(
            floating_point_safe, excess, noised_coordinates, run.steps))
        if not secret_randomness:
            paragraphs.append(statement.insecure_randomness_paragraph())
    paragraphs.append(statement.summary_line(epsilon, delta))

    return PrivacyResult(
        epsilon=epsilon,
        epsilon_noisy_steps_only=epsilon_noisy_only,
        delta=delta,
        accountant=run.accountant,
        statement=statement.join(paragraphs),
        mechanism=run.mechanism,
        noise_schedule=run.noise_schedule,
        noise_probability=run.noise_probability,
        on_skip=run.on_skip,
        sampling=run.sampling,
        noise_multiplier=run.noise_multiplier,
        accounted_noise_multiplier=run.accounted_noise_multiplier,
        used_microbatching=run.used_microbatching,
        num_examples=run.num_examples,
        batch_size=run.batch_size,
        sampling_probability=q * run.bands if run.banded else q,
        steps=run.steps,
        noisy_steps=run.noisy_steps,
        accounted_steps=(-(-formal.count // run.bands) if run.banded else formal.count)
        if run.mechanism != NO_NOISE else None,
        epsilon_assuming_poisson=epsilon_assuming_poisson,
        privacy_unit=privacy_unit,
        adjacency=run.adjacency,
        secret_randomness=bool(secret_randomness),
        floating_point_safe=bool(floating_point_safe),
        bands=run.bands,
    )
