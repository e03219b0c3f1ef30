"""Accounting for banded DP matrix factorization amplified by cyclic Poisson sampling.

The guarantee (Choquette-Choo et al., "Amplified Banded Matrix Factorization", NeurIPS
2023, Theorem 4; the reduction JAX-privacy's `DpsgdTrainingAccountant(cycle_length=b)`
implements) holds under these assumptions, which `BANDED_MF_ASSUMPTIONS` states:

* the strategy C is b-banded lower-triangular (here Toeplitz) with largest column L2
  norm 1 (`tfdp.mechanisms.banded`), and the noise is (C^{-1} z)_t with z i.i.d.
  N(0, (noise_multiplier * clip)^2) per coordinate and step (`tfdp.randomness.BandedNoise`);
  a restarted recurrence (resumed run) makes C block-diagonal, still b-banded with
  columns of norm <= 1, so the figure still holds;
* each example's fold is drawn independently and uniformly from b folds (never an
  equal, position-based split, which covers only replace-one adjacency), and step t
  samples fold (t mod b), each of its examples with probability q = batch_size * b / n
  (`tfdp.data.cyclic_poisson`): so an example takes part at most once every b steps,
  and the columns it touches are orthogonal;
* add-or-remove-one adjacency of examples, every step's clipped sum of sensitivity clip.

It then composes ceil(T / b) Poisson-subsampled Gaussian mechanisms of rate q and noise
multiplier sigma: dp_accounting's SelfComposedDpEvent(PoissonSampledDpEvent(q,
GaussianDpEvent(sigma)), ceil(T / b)). With b = 1 this is DP-SGD's accounting.
"""

from __future__ import annotations

import math

import dp_accounting

from tfdp._validation import check_choice, check_positive, check_positive_int, check_probability
from tfdp.accounting.calibration import calibrate_noise_multiplier
from tfdp.accounting.epsilon import check_delta
from tfdp.accounting.events import DEFAULT_PLD_DISCRETIZATION, composed_event, epsilon_of
from tfdp.data.cyclic_poisson import cyclic_sampling_probability
from tfdp.mechanisms import Accountant, values

BANDED_MF_ASSUMPTIONS = (
    "Banded matrix factorization (b bands, column-normalized banded Toeplitz strategy: "
    "largest column norm 1) amplified by cyclic Poisson sampling: each example's fold "
    "drawn independently and uniformly from b folds, step t sampling fold t mod b with "
    "probability q = batch_size * b / num_examples, so an example takes part at most once "
    "every b steps; add-or-remove-one adjacency; accounted as ceil(steps / b) "
    "Poisson-subsampled Gaussian mechanisms (Choquette-Choo et al. 2023, Theorem 4)."
)


def participations(num_steps: int, bands: int) -> int:
    """ceil(T / b): the most steps one example can take part in under cyclic sampling."""
    return -(-check_positive_int("num_steps", num_steps) // check_positive_int("bands", bands))


def banded_mf_dp_event(noise_multiplier: float, sampling_probability: float, num_steps: int,
                       bands: int) -> dp_accounting.DpEvent:
    """ceil(T / b) self-composed Poisson(q)-subsampled Gaussians of `noise_multiplier`.

    `noise_multiplier` is the noise std over clip * sensitivity, the sensitivity being
    the strategy's largest column norm (1 when normalized).
    """
    noise_multiplier = check_positive("noise_multiplier", noise_multiplier)
    sampling_probability = check_probability("sampling_probability", sampling_probability)
    return composed_event("gaussian", noise_multiplier, sampling_probability,
                          participations(num_steps, bands))


def banded_mf_epsilon(num_examples: int, batch_size: float, noise_multiplier: float,
                      num_steps: int, bands: int, delta: float,
                      accountant: str = Accountant.PLD,
                      value_discretization_interval: float = DEFAULT_PLD_DISCRETIZATION
                      ) -> float:
    """Epsilon at `delta` of T steps of b-banded DP-MF under cyclic Poisson sampling.

    q = batch_size * bands / num_examples (refused when above 1: fewer bands or a
    smaller batch); see `BANDED_MF_ASSUMPTIONS`. PLD (default, dp_accounting's grid
    1e-4, as `compute_epsilon`) or RDP (dp_accounting's default orders).
    """
    check_choice("accountant", accountant, values(Accountant))
    q = cyclic_sampling_probability(num_examples, batch_size, bands)
    event = banded_mf_dp_event(noise_multiplier, q, num_steps, bands)
    return epsilon_of(event, check_delta(delta), str(accountant), value_discretization_interval)


def calibrate_banded_mf_noise(target_epsilon: float, delta: float, num_examples: int,
                              batch_size: float, num_steps: int, bands: int,
                              accountant: str = Accountant.PLD,
                              tolerance: float = 1e-4) -> float:
    """The smallest noise multiplier whose `banded_mf_epsilon` is <= `target_epsilon`.

    The same search as `calibrate_noise_multiplier` (dp_accounting's Brent search,
    bracketed by the RDP answer for PLD) on the same events: q = B * b / n composed
    ceil(T / b) times is its Poisson calibration with batch B * b and ceil(T / b) steps.
    """
    check_choice("accountant", accountant, values(Accountant))
    cyclic_sampling_probability(num_examples, batch_size, bands)  # refuses B * b > n
    return calibrate_noise_multiplier(
        target_epsilon, delta, num_examples, batch_size * bands,
        steps=participations(num_steps, bands), mechanism="gaussian",
        accountant=str(accountant), tolerance=tolerance)
