"""The plain-language statement that goes with every epsilon."""

from __future__ import annotations

import math
import textwrap
from typing import List, Optional

from tfdp.accounting.counting import Count
from tfdp.mechanisms import NO_NOISE, NoiseSchedule, OnSkip, get_mechanism
from tfdp.randomness import INSECURE_NOTE, grid

_WIDTH = 88


def format_epsilon(value: Optional[float]) -> str:
    """An epsilon as text: 3 decimals, "inf" (no formal guarantee), or "n/a" for None.

    The one epsilon formatter of tfdp: statements, progress lines, tables and scripts
    all print epsilons through it.
    """
    if value is None:
        return "n/a"
    value = float(value)
    if math.isnan(value):
        return "nan"
    return "inf" if math.isinf(value) else f"{value:.3f}"


fmt_epsilon = format_epsilon  # the name the statement builders have always used


def _fill(text: str) -> str:
    # No breaks at hyphens: "data-dependent" must not read "data- dependent" once unwrapped.
    return textwrap.fill(" ".join(text.split()), width=_WIDTH, break_on_hyphens=False)


def mechanism_paragraph(
    mechanism: str, noise_multiplier: Optional[float], accounted: Optional[float],
    used_microbatching: bool, accountant: str, adjacency: str = "add-or-remove-one",
) -> str:
    """What noise was added, and which accountant reads it (the mechanism object's words)."""
    if mechanism == NO_NOISE:
        return _fill(
            "Mechanism: none. Training without noise has NO differential-privacy "
            "guarantee: epsilon = inf."
        )
    if adjacency == "replace-one":
        halved = (f"; accounted as {accounted:g} because replacing one example moves its "
                  "unit's clipped gradient by up to twice the clip")
    elif used_microbatching:
        halved = (f"; accounted as {accounted:g} because microbatches of several examples "
                  "double the sensitivity")
    else:
        halved = ""
    return _fill(get_mechanism(mechanism).statement(noise_multiplier, accountant, halved))


def plural(unit: str) -> str:
    """The plural of a privacy unit's name ("example" -> "examples", "patient" -> "patients")."""
    return unit if unit.endswith("s") else unit + "s"


def scope_paragraph(
    num_examples: int, batch_size: float, steps: int, delta: float, private: bool = True,
    privacy_unit: str = "example", adjacency: str = "add-or-remove-one",
) -> str:
    """Data, steps, adjacency and what the guarantee covers."""
    epochs = steps * batch_size / num_examples
    units = plural(privacy_unit)
    size = (f"batch size {batch_size:g}" if privacy_unit == "example"
            else f"batch size {batch_size:g} {units}")
    training = (
        f"Training: {num_examples} {units}, {size}, {steps} steps "
        f"(about {epochs:.3g} epochs)."
    )
    if not private:
        return _fill(training)
    if privacy_unit == "example" and adjacency == "replace-one":
        level = (
            f"Example-level DP with replace-one adjacency at delta = {delta:g}: adjacent "
            "data sets have the same size and differ in one example (the data set's size "
            "is taken as public). Poisson sampling gives the add-or-remove-one guarantee "
            "instead."
        )
    elif privacy_unit == "example":
        level = f"Example-level DP with add-or-remove-one adjacency at delta = {delta:g}."
    else:
        level = (
            f"{privacy_unit.capitalize()}-level (user-level) DP: adjacent data sets differ by "
            f"all the examples of one {privacy_unit} (add or remove one {privacy_unit}), at "
            f"delta = {delta:g}; each {privacy_unit}'s examples were sampled together and "
            f"their mean gradient clipped as one unit. This protects a {privacy_unit}'s "
            "presence whatever the number of their examples; an example-level epsilon "
            f"would give a {privacy_unit} with k examples only group privacy, k x epsilon."
        )
    return _fill(
        f"{training} {level} It covers every intermediate model (all "
        "checkpoints), not only the final one; it does not cover hyperparameter "
        "tuning, data-dependent preprocessing, or the training loss and metrics "
        "Keras computes on the raw batches."
    )


def poisson_paragraph(sampling_probability: float, privacy_unit: str = "example") -> str:
    """The Poisson sampling assumption, and what to do when it does not hold."""
    made_by = ("tfdp.data.poisson_batches produces such batches" if privacy_unit == "example"
               else "tfdp.data.poisson_batches(..., groups=ids) produces such batches")
    return _fill(
        f"Sampling: assumes Poisson sampling, each {privacy_unit} joining each step "
        f"independently with probability q = {sampling_probability:.4g} "
        f"({made_by}). If training used "
        "shuffled fixed-size batches (plain model.fit), this figure is not a "
        "guarantee: use sampling='shuffle'."
    )


def cyclic_poisson_paragraph(sampling_probability: float, bands: int, steps: int,
                             participations: int) -> str:
    """Cyclic Poisson sampling (banded DP-MF): folds, the fold's rate, the participations."""
    return _fill(
        f"Sampling: assumes cyclic Poisson sampling with {bands} folds "
        "(tfdp.data.cyclic_poisson_batches): each example's fold drawn independently and "
        f"uniformly, step t sampling fold t mod {bands}, each of its examples independently "
        f"with probability q = {sampling_probability:.4g}. An example thus takes part in at "
        f"most {participations} of the {steps} steps, which is what is composed. Other "
        "batches (plain Poisson or shuffled) void this figure."
    )


def shuffle_paragraph(
    passes: int, epsilon: float, epsilon_poisson: float, counted_from_steps: bool = False
) -> str:
    """Both figures for shuffled batches, labelled as TF Privacy's privacy statement does."""
    counted = (
        " (counted from the steps as ceil(steps / floor(n / b)), which can be one more "
        "than the epochs trained)" if counted_from_steps else ""
    )
    head = _fill(
        f"Sampling: shuffled fixed-size batches; each example is used at most once per "
        f"pass, {passes} passes{counted}; no amplification by subsampling is assumed. "
        "With fixed-size batches adding an example pushes another out of its place, so "
        "the guarantee is for replacing one example (sensitivity twice the clip)."
    )
    table = (
        f"    Epsilon, replace-one, each example once per pass (the guarantee): "
        f"{fmt_epsilon(epsilon):>10}\n"
        f"    Epsilon assuming Poisson sampling (*), NOT a guarantee here:        "
        f"{fmt_epsilon(epsilon_poisson):>10}"
    )
    note = _fill(
        "(*) Shuffled batches are not Poisson sampled, and the Poisson figure does not "
        "carry over to them: shuffling can leak much more than it suggests (Chua et al., "
        "\"How Private are DP-SGD Implementations?\", 2024). For a guarantee with "
        "amplification, train on tfdp.data.poisson_batches."
    )
    return f"{head}\n{table}\n{note}"


def schedule_paragraph(
    *,
    noise_schedule: str,
    noise_probability: float,
    on_skip: str,
    steps: int,
    opportunities: int,
    per_pass: bool,
    formal: Count,
    noisy_only: Count,
    epsilon_noisy_only: float,
) -> str:
    """What the noise schedule means for the guarantee; labels every side figure."""
    unit = "noisy releases per example" if per_pass else "noisy steps"
    if noise_schedule == NoiseSchedule.REGULAR:
        return _fill("Noise schedule: regular (noise on every step).")
    head = f"Noise schedule: random (noise on a step with probability p = {noise_probability:g})"
    if on_skip == OnSkip.RELEASE:
        if formal.count is not None:
            why = (
                "the training ledger shows that every step carried noise"
                if formal.kind == "realized" else "p = 1, so every step carries noise"
            )
            return _fill(f"{head}, noiseless steps released; {why}, so the guarantee "
                         "composes over all of them.")
        where = (
            "the training ledger's count" if noisy_only.kind == "realized"
            else "the expected count p x steps, rounded up"
        )
        return _fill(
            f"{head}, noiseless steps released. A noiseless step releases an exact "
            "clipped gradient sum, so there is NO formal differential-privacy "
            "guarantee: epsilon = inf. The dynamic-DP paper's convention composes over "
            f"the noisy steps only ({noisy_only.count} {unit}, {where}): "
            f"epsilon_noisy_steps_only = {fmt_epsilon(epsilon_noisy_only)}. That figure "
            "is NOT a privacy guarantee: it ignores what the noiseless steps reveal. "
            "on_skip='drop' is the sound variant; membership-inference attacks give an "
            "empirical view."
        )
    head += ", noiseless steps dropped (no data touched, no update)"
    if formal.kind == "realized":
        return _fill(
            f"{head}. The guarantee composes over the {formal.count} {unit} the "
            f"training ledger recorded ({steps} steps taken)."
        )
    if formal.kind == "all":
        return _fill(f"{head}. With p = 1 every step is noisy.")
    tail = noisy_only.delta - formal.delta
    return _fill(
        f"{head}. Planning figure: the number of noisy steps is random "
        f"(Binomial({opportunities}, {noise_probability:g})). epsilon is a guarantee: "
        f"it composes over {formal.count} {unit}, a count exceeded with probability at "
        f"most {tail:.2g}, and that probability is part of delta (accountant delta "
        f"{formal.delta:.3g} + {tail:.2g}). The figure over the expected count "
        f"({noisy_only.count}), epsilon_noisy_steps_only = "
        f"{fmt_epsilon(epsilon_noisy_only)}, is an ESTIMATE, not a guarantee. After "
        "training, pass noisy_steps (the optimizer's ledger) for the realized guarantee."
    )


def noise_sampler_paragraph(floating_point_safe: bool, excess, coordinates, steps: int) -> str:
    """How the noise was sampled: textbook floating point, or on a grid (and its excess)."""
    if not floating_point_safe:
        return _fill(
            "Noise sampling: textbook floating point, whose low-order bits can reveal the "
            "noiseless sum (Mironov 2012); floating_point_safe_noise=True adds the noise on a "
            "grid instead.")
    if excess is None:
        return _fill(
            "Noise sampling: on a grid (the clipped sum rounded, integer noise added), with "
            "the same accounting; the samplers' floating point adds at most 2 x steps x d x "
            f"{grid.ETA:.2g} to epsilon (d: parameters noised per step), not included above.")
    return _fill(
        "Noise sampling: on a grid (the clipped sum rounded, integer noise added), with the "
        f"same accounting; the samplers' floating point adds at most {excess[0]:.2g} to epsilon "
        f"and {excess[1]:.2g} to delta over {steps} steps of {coordinates} coordinates, "
        "included below.")


def insecure_randomness_paragraph() -> str:
    """Said of a run whose noise and sampling a seed reproduces (the insecure opt-in)."""
    return _fill(INSECURE_NOTE)


def summary_line(epsilon: float, delta: float) -> str:
    """The one-line bottom line."""
    if math.isinf(epsilon):
        return f"Formal guarantee: none (epsilon = inf at delta = {delta:g})."
    return f"Formal guarantee: ({fmt_epsilon(epsilon)}, {delta:g})-DP."


def join(paragraphs: List[str]) -> str:
    """Paragraphs separated by blank lines."""
    return "\n\n".join(p for p in paragraphs if p) + "\n"


def with_paragraph(statement: str, text: str) -> str:
    """`statement` with one more paragraph (wrapped) before its bottom line, if it has one."""
    paragraphs = [p for p in statement.strip().split("\n\n") if p]
    at = len(paragraphs) - 1 if paragraphs and paragraphs[-1].startswith(
        "Formal guarantee") else len(paragraphs)
    return join(paragraphs[:at] + [_fill(text)] + paragraphs[at:])
