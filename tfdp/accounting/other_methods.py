"""What residual perturbation and NeuralDP runs can claim: no formal guarantee, said in words.

    residual_perturbation_privacy(gamma, *, num_examples, batch_size, steps, ...)
    neuraldp_privacy(noise_multiplier, clip_norm, *, num_examples, batch_size, steps, ...)

Both return an `OtherMethodPrivacy` whose `epsilon` is math.inf: neither method, as
trained here (ordinary optimizers, gradients neither clipped nor noised), bounds one
example's influence on the released weights. NeuralDP's figure, computed the way the
(withdrawn) preprint argues, goes to the separately labelled `epsilon_claimed`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Optional

from tfdp._validation import check_choice, check_non_negative, check_positive, check_positive_int
from tfdp.accounting import statement as _text
from tfdp.accounting.epsilon import check_delta, compute_epsilon
from tfdp.accounting.record import RecordMethods
from tfdp.mechanisms import Sampling, values

RESIDUAL_PERTURBATION_PAPER = (
    "Tao, Ling, Shi, Wang, \"Deep Learning with Data Privacy via Residual Perturbation\", "
    "arXiv 2408.05723 (an earlier version was an ICLR 2021 submission)"
)
NEURALDP_PAPER = (
    "Knolle et al., \"NeuralDP: Differentially private neural networks by design\", "
    "arXiv 2107.14582, a preprint withdrawn by its authors"
)
NEURALDP_CLAIM_LABEL = "claimed by the (withdrawn) NeuralDP preprint; not a guarantee"


@dataclasses.dataclass(frozen=True)
class OtherMethodPrivacy(RecordMethods):
    """The privacy record of a residual-perturbation or NeuralDP run.

    It carries the keys of `PrivacyResult.to_dict()` that reports and exports read
    ("epsilon", "epsilon_noisy_steps_only", "delta", "accountant", "statement").

    Attributes:
      epsilon: math.inf: no formal (epsilon, delta)-DP guarantee.
      epsilon_noisy_steps_only: math.inf (the noisy-steps convention of the random
        schedule does not apply: every step here is an unprotected step).
      delta: the delta the claim (if any) is stated at.
      accountant: None (nothing is accounted as a guarantee).
      statement: plain-language text: what the noise touches, what is not covered.
      method: "residual_perturbation" or "neuraldp".
      epsilon_claimed: NeuralDP only: epsilon computed the way the withdrawn
        preprint argues (None for residual perturbation). NOT a guarantee.
      epsilon_claimed_by: the label that must accompany `epsilon_claimed`.
      settings: the method's noise settings and the run's size (for the record).
    """

    epsilon: float
    epsilon_noisy_steps_only: float
    delta: float
    accountant: Optional[str]
    statement: str
    method: str
    epsilon_claimed: Optional[float] = None
    epsilon_claimed_by: Optional[str] = None
    settings: Dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def is_guarantee(self) -> bool:
        """Always False: these runs have no formal DP guarantee."""
        return False


def _run_size(num_examples, batch_size, steps):
    num_examples = check_positive_int("num_examples", num_examples)
    batch_size = check_positive("batch_size", batch_size)
    if isinstance(steps, bool) or int(steps) != steps or steps < 0:
        raise ValueError(f"`steps` must be a whole number >= 0, got {steps!r}.")
    return num_examples, batch_size, int(steps)


def _training_line(num_examples: int, batch_size: float, steps: int) -> str:
    epochs = steps * batch_size / num_examples
    return (f"Training: {num_examples} examples, batch size {batch_size:g}, {steps} steps "
            f"(about {epochs:.3g} epochs) with an ordinary optimizer.")


def residual_perturbation_privacy(
    gamma: float,
    *,
    num_examples: int,
    batch_size: float,
    steps: int,
    delta: float = 1e-5,
    noise: str = "additive",
    inference_noise: bool = False,
) -> OtherMethodPrivacy:
    """The privacy record of a ResNet trained with residual perturbation of scale `gamma`.

    The paper proves a differential-privacy bound for residual perturbation. tfdp
    does not evaluate it: the conditions any such bound needs (a bounded influence
    of one example) are neither enforced nor checked by this training, so the
    record says "no formal guarantee" (epsilon = inf) and explains why.
    """
    gamma = check_non_negative("gamma", gamma)
    noise = check_choice("noise", noise, ("additive", "multiplicative"))
    num_examples, batch_size, steps = _run_size(num_examples, batch_size, steps)
    delta = check_delta(delta)
    form = ("x_{l+1} = x_l + F(x_l) + gamma * n_l" if noise == "additive"
            else "x_{l+1} = x_l + F(x_l) + gamma * F(x_l) * n_l (elementwise)")
    paragraphs = [
        _text._fill(
            f"Method: residual perturbation ({RESIDUAL_PERTURBATION_PAPER}). Gaussian "
            f"noise of scale gamma = {gamma:g} is added to every residual branch of the "
            f"ResNet in training ({noise} noise: {form}, n_l ~ N(0, I) drawn per example); "
            + ("the noise stays on at inference (noisy ensembles)."
               if inference_noise else "inference runs without noise.")
        ),
        _text._fill(_training_line(num_examples, batch_size, steps)),
        _text._fill(
            "No formal guarantee for this training as run: epsilon = inf. The noise "
            "perturbs activations in the forward pass only; the gradients and weight "
            "updates are computed from the raw training examples and their exact labels "
            "and are neither clipped nor noised, so nothing bounds one example's "
            "influence on the released weights. The paper's differential-privacy bound "
            "assumes conditions on the network, the data and the training (a bounded "
            "influence of one example, e.g. bounded inputs and bounded or Lipschitz "
            "residual maps and loss) that this implementation neither enforces nor "
            "checks, so tfdp reports no numeric epsilon for it. Judge the leakage with "
            "the membership-inference attacks (attack AUC, empirical epsilon lower "
            "bound), which do not prove privacy either."
        ),
        _text.summary_line(math.inf, delta),
    ]
    return OtherMethodPrivacy(
        epsilon=math.inf,
        epsilon_noisy_steps_only=math.inf,
        delta=delta,
        accountant=None,
        statement=_text.join(paragraphs),
        method="residual_perturbation",
        settings=dict(gamma=gamma, noise=noise, inference_noise=bool(inference_noise),
                      num_examples=num_examples, batch_size=batch_size, steps=steps),
    )


def neuraldp_privacy(
    noise_multiplier: float,
    clip_norm: float,
    *,
    num_examples: int,
    batch_size: float,
    steps: int,
    delta: float = 1e-5,
    sampling: str = "poisson",
    layer_description: str = "one hidden layer",
    clip_at_inference: bool = False,
) -> OtherMethodPrivacy:
    """The privacy record of a NeuralDP run: epsilon = inf, plus the preprint's claim, labelled.

    The claim follows the preprint's argument (a Gaussian mechanism on the privatized
    activations, everything after them post-processing), accounted as a subsampled
    Gaussian mechanism like DP-SGD (noise multiplier sigma, sampling rate
    batch_size / num_examples, `steps` compositions, RDP). It is reported in `epsilon_claimed`,
    never in `epsilon`, because it does not cover the layers before the privatized
    one, the labels, or the training loss and metrics.

    Args:
      noise_multiplier: sigma >= 0 (noise std / clip_norm); 0 makes the claim inf.
      clip_norm: the per-example activation clip C > 0.
      num_examples, batch_size, steps: the run (steps actually taken).
      delta: delta of the claimed figure.
      sampling: "poisson" or "shuffle", as in `tfdp.compute_epsilon`.
      layer_description: where the privatizer sits, for the statement.
      clip_at_inference: whether the layer clips (without noise) at inference.
    """
    noise_multiplier = check_non_negative("noise_multiplier", noise_multiplier)
    clip_norm = check_positive("clip_norm", clip_norm)
    num_examples, batch_size, steps = _run_size(num_examples, batch_size, steps)
    delta = check_delta(delta)
    sampling = check_choice("sampling", sampling, values(Sampling))
    if steps == 0:
        claimed = 0.0
    elif noise_multiplier == 0.0:
        claimed = math.inf
    else:
        claimed = float(compute_epsilon(
            num_examples, batch_size, noise_multiplier, steps=steps, delta=delta,
            mechanism="gaussian", sampling=sampling).epsilon)
    paragraphs = [
        _text._fill(
            f"Method: NeuralDP ({NEURALDP_PAPER}). In training, each example's "
            f"activations at {layer_description} are clipped to L2 norm "
            f"{clip_norm:g} and Gaussian noise of std {noise_multiplier:g} x "
            f"{clip_norm:g} is added; at inference the layer "
            + ("clips without noise." if clip_at_inference else "is the identity.")
        ),
        _text._fill(_training_line(num_examples, batch_size, steps)),
        _text._fill(
            f"Epsilon {NEURALDP_CLAIM_LABEL}: {_text.fmt_epsilon(claimed)} at delta = "
            f"{delta:g}. It follows the preprint's argument (a Gaussian mechanism on the "
            "privatized activations, everything after them post-processing), accounted by "
            f"tfdp as a {'Poisson-' if sampling == 'poisson' else ''}subsampled Gaussian "
            f"mechanism like DP-SGD (noise multiplier {noise_multiplier:g}, q = "
            f"{batch_size / num_examples:.4g}, {steps} steps, RDP accounting)."
        ),
        _text._fill(
            "This claim does not cover: the layers before the privatized one (they see "
            "the raw examples, and their weights are updated with gradients computed from "
            "the raw data that are neither clipped nor noised, then released); the labels "
            "(the loss and every gradient use each example's exact label); the training "
            "loss and metrics Keras computes on the raw batches. Privatizing activations "
            "per example and training the network with an ordinary optimizer does not "
            "make the training differentially private. No formal guarantee for this "
            "training as run: epsilon = inf."
        ),
        _text.summary_line(math.inf, delta),
    ]
    return OtherMethodPrivacy(
        epsilon=math.inf,
        epsilon_noisy_steps_only=math.inf,
        delta=delta,
        accountant=None,
        statement=_text.join(paragraphs),
        method="neuraldp",
        epsilon_claimed=claimed,
        epsilon_claimed_by=NEURALDP_CLAIM_LABEL,
        settings=dict(noise_multiplier=noise_multiplier, clip_norm=clip_norm,
                      num_examples=num_examples, batch_size=batch_size, steps=steps,
                      sampling=sampling, clip_at_inference=bool(clip_at_inference)),
    )
