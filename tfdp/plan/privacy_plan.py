"""`PrivacyPlan`: the facts a run's epsilon depends on, stated once and handed to every part.

    plan = tfdp.PrivacyPlan(num_examples=len(x), batch_size=64, epochs=20,
                            l2_norm_clip=1.0, target_epsilon=3.0)
    model = plan.make_private(model)
    model.compile(optimizer=plan.optimizer(keras.optimizers.SGD(0.5)), loss=...)
    model.fit(plan.batches(x, y), epochs=plan.fit_epochs, callbacks=[plan.callback()])

The plan is frozen and validated when built. It calibrates the noise to a target epsilon
(or takes a noise multiplier), and the sampler, the DP optimizer, the callback and the
statement it gives all read the same data size, batch size, unit and step budget, so they
cannot disagree: `batches` refuses data of another size, the optimizer refuses a step past
the budget before anything is applied, and the callback ends `fit` at the budget.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Optional, Union

import dp_accounting
import keras

from tfdp._validation import check_choice, check_positive, check_positive_int
from tfdp.accounting.calibration import calibrate_noise_multiplier
from tfdp.accounting.callback import PrivacyCallback
from tfdp.accounting.epsilon import (
    check_accountant,
    check_delta,
    check_privacy_unit,
    check_sizes,
    compute_epsilon,
)
from tfdp.accounting.events import composed_event
from tfdp.accounting.privacy_result import PrivacyResult
from tfdp.accounting import counting
from tfdp.data.groups import count_groups
from tfdp.data.cyclic_poisson import (cyclic_poisson_batches, cyclic_sampling_probability,
                                      cyclic_steps_per_epoch)
from tfdp.data.poisson import poisson_batches
from tfdp.mechanisms import (
    NoiseSchedule,
    OnSkip,
    get_mechanism,
    make_dp_sum_query,
    mechanism_names,
    values,
)

_OPTIMIZER_NAMES = {"sgd": "DPKerasSGDOptimizer", "adam": "DPKerasAdamOptimizer",
                    "adagrad": "DPKerasAdagradOptimizer"}
# What `PrivacyPlan.optimizer` passes on to the DP optimizer beside a Keras instance.
_DP_OPTIONS = ("on_nonfinite", "num_microbatches", "insecure_reproducible_seed", "name")


@dataclasses.dataclass(frozen=True)
class PrivacyPlan:
    """One run's privacy: data size, unit, batch size, steps, mechanism, clip, noise, budget.

    Give `target_epsilon` (the plan calibrates the smallest noise multiplier that meets
    it over the planned steps) or `noise_multiplier`. The planned steps are the budget:
    the optimizer the plan builds refuses any step beyond them.

    Attributes:
      num_examples: the training examples n, or the number of groups with a group
        `privacy_unit` (e.g. patients).
      batch_size: the expected batch size b (groups per batch with a group unit); every
        step samples each unit independently with probability q = b / n.
      epochs / steps: one of them (both when they agree); steps = ceil(epochs * n / b).
      l2_norm_clip / l1_norm_clip: the per-unit clip (L2 for "gaussian", L1 for "laplace").
      delta: the delta of the guarantee.
      target_epsilon / noise_multiplier: the target (the plan calibrates the smallest
        multiplier meeting it), the multiplier, or both when the multiplier meets the
        target (as `get_config` records them).
      mechanism, noise_schedule, noise_probability, on_skip: as for the DP optimizers.
      accountant: None (the mechanism's default), "rdp" or "pld".
      privacy_unit: "example", or a group's name (user-level DP, e.g. "patient").
      floating_point_safe_noise: noise on a grid (see `tfdp.randomness.grid`).
      bands: mechanism="banded_mf" only (required there): b, the banded strategy's
        diagonals; the plan's batches are then cyclic Poisson over b folds, its epsilon
        composes ceil(steps / b) participations at q = b * batch_size / n, and an epoch is
        ceil(n / batch_size) steps rounded up to whole cycles of b.
    """

    num_examples: int
    batch_size: float
    epochs: Optional[float] = None
    steps: Optional[int] = None
    l2_norm_clip: Optional[float] = None
    l1_norm_clip: Optional[float] = None
    delta: float = 1e-5
    target_epsilon: Optional[float] = None
    noise_multiplier: Optional[float] = None
    mechanism: str = "gaussian"
    noise_schedule: str = NoiseSchedule.REGULAR
    noise_probability: float = 1.0
    on_skip: str = OnSkip.DROP
    accountant: Optional[str] = None
    privacy_unit: str = "example"
    floating_point_safe_noise: bool = False
    bands: Optional[int] = None

    def __post_init__(self) -> None:
        num_examples, batch_size = check_sizes(self.num_examples, self.batch_size)
        steps = self._resolved_steps(num_examples, batch_size)
        fields: Dict[str, Any] = dict(
            num_examples=num_examples, batch_size=batch_size, steps=steps,
            epochs=steps * batch_size / num_examples, delta=check_delta(self.delta),
            accountant=check_accountant(self.accountant, self.mechanism),
            privacy_unit=check_privacy_unit(self.privacy_unit),
            floating_point_safe_noise=bool(self.floating_point_safe_noise),
            # Plain strings, so that the config is JSON as it stands.
            mechanism=_plain(check_choice("mechanism", self.mechanism, mechanism_names())),
            noise_schedule=_plain(check_choice("noise_schedule", self.noise_schedule,
                                               values(NoiseSchedule))),
            on_skip=_plain(check_choice("on_skip", self.on_skip, values(OnSkip))),
        )
        for name, value in fields.items():
            object.__setattr__(self, name, value)
        self._check_banded()
        if self.target_epsilon is None and self.noise_multiplier is None:
            raise ValueError(
                "Give the plan `target_epsilon` (it calibrates the noise) or `noise_multiplier`.")
        if self.target_epsilon is not None:
            object.__setattr__(self, "target_epsilon",
                               check_positive("target_epsilon", self.target_epsilon))
            if (self.noise_schedule == NoiseSchedule.RANDOM and self.on_skip == OnSkip.RELEASE
                    and self.noise_probability < 1.0):
                raise ValueError(
                    "A target epsilon needs a formal guarantee, but noise_schedule='random' "
                    "with on_skip='release' releases noiseless steps (epsilon = inf). Use "
                    "on_skip='drop', or give noise_multiplier instead of target_epsilon.")
            if self.noise_multiplier is None:
                object.__setattr__(self, "noise_multiplier", calibrate_noise_multiplier(
                    self.target_epsilon, self.delta, num_examples, batch_size, steps=steps,
                    mechanism=self.mechanism, noise_schedule=self.noise_schedule,
                    noise_probability=self.noise_probability, on_skip=self.on_skip,
                    accountant=self.accountant, bands=self.bands))
        # The query's own checks: clip kind against mechanism, multiplier, schedule.
        make_dp_sum_query(**self._query_arguments())
        if self.target_epsilon is not None:
            reached = self.epsilon().epsilon
            if reached > self.target_epsilon * (1 + 1e-9):
                raise ValueError(
                    f"noise_multiplier={self.noise_multiplier:g} reaches epsilon "
                    f"{reached:.4g} over {steps} steps, above target_epsilon="
                    f"{self.target_epsilon:g}: give one of them, or more noise.")

    @property
    def banded(self) -> bool:
        """True for mechanism="banded_mf" (correlated noise, cyclic Poisson batches)."""
        return self.mechanism == "banded_mf"

    def _check_banded(self) -> None:
        """bands: required by banded_mf (checked against n, B and T), refused elsewhere."""
        if not self.banded:
            if self.bands is not None:
                raise ValueError("`bands` is for mechanism='banded_mf'; drop it with "
                                 f"mechanism={self.mechanism!r}.")
            return
        if self.bands is None:
            raise ValueError(
                "mechanism='banded_mf' needs `bands`, e.g. bands=4 (at most "
                f"{max(1, int(self.num_examples // self.batch_size))} for these sizes: "
                "batch_size * bands <= num_examples).")
        object.__setattr__(self, "bands", check_positive_int("bands", self.bands))
        cyclic_sampling_probability(self.num_examples, self.batch_size, self.bands)
        if self.bands > self.steps:
            raise ValueError(f"bands={self.bands} exceeds the plan's {self.steps} steps: use "
                             f"bands <= {self.steps}.")
        if self.grouped:
            raise ValueError(
                "mechanism='banded_mf' assigns folds per example, not per "
                f"{self.privacy_unit}: use privacy_unit='example', or mechanism='gaussian'.")

    def _resolved_steps(self, num_examples: int, batch_size: float) -> int:
        """The planned steps, from `steps` or `epochs` (both only when they agree)."""
        if self.epochs is None and self.steps is None:
            raise ValueError("Give the plan `epochs` (passes over the data) or `steps`.")
        from_epochs = (None if self.epochs is None else counting.steps_from_epochs(
            check_positive("epochs", self.epochs), num_examples, batch_size))
        if self.steps is None:
            return from_epochs
        steps = check_positive_int("steps", self.steps)
        if from_epochs is not None and from_epochs != steps:
            raise ValueError(f"epochs={self.epochs:g} makes {from_epochs} steps, not "
                             f"steps={steps}: give one of them.")
        return steps

    # ----- what the plan gives -----

    @property
    def sampling_probability(self) -> float:
        """q = batch_size / num_examples, each unit's chance to be in a step."""
        return self.batch_size / self.num_examples

    @property
    def steps_per_epoch(self) -> int:
        """ceil(n / b): the steps of one pass of `batches` (whole cycles of bands for banded_mf)."""
        if self.banded:
            return cyclic_steps_per_epoch(self.num_examples, self.batch_size, self.bands)
        return max(1, math.ceil(self.num_examples / self.batch_size))

    @property
    def fit_epochs(self) -> int:
        """The `epochs` to give `model.fit`: enough passes to take every planned step."""
        return math.ceil(self.steps / self.steps_per_epoch)

    @property
    def grouped(self) -> bool:
        """True when the unit is a group of examples (user-level DP)."""
        return self.privacy_unit != "example"

    def batches(self, x: Any, y: Any = None, *, groups: Any = None, **kwargs: Any):
        """Poisson-sampled batches of (x, y) at the plan's rate, `steps_per_epoch` per pass.

        Refuses data whose size (or number of groups) is not the plan's `num_examples`:
        the epsilon would be computed for another data set. `kwargs` go to
        `tfdp.data.poisson_batches` (e.g. `max_examples_per_group`).
        """
        if self.grouped and groups is None:
            raise ValueError(
                f"The plan protects each {self.privacy_unit}: give `groups=` (one "
                f"{self.privacy_unit} id per example) so that whole {self.privacy_unit}s are "
                "sampled.")
        if not self.grouped and groups is not None:
            raise ValueError(
                "The plan protects each example, but `groups=` was given: build the plan "
                "with privacy_unit='<the group name>' and num_examples=<number of groups>.")
        if self.banded:
            found = _num_rows(x)
            if found != self.num_examples:
                raise ValueError(
                    f"The plan was made for {self.num_examples} examples, but the data holds "
                    f"{found}: its epsilon would be wrong. Build the plan with "
                    f"num_examples={found}.")
            return cyclic_poisson_batches(x, y, self.batch_size, self.bands,
                                          num_steps=self.steps_per_epoch, **kwargs)
        found = count_groups(groups) if groups is not None else _num_rows(x)
        what = f"{self.privacy_unit}s" if self.grouped else "examples"
        if found != self.num_examples:
            raise ValueError(
                f"The plan was made for {self.num_examples} {what}, but the data holds "
                f"{found}: its epsilon would be wrong. Build the plan with "
                f"num_examples={found}.")
        return poisson_batches(x, y, self.batch_size, num_steps=self.steps_per_epoch,
                               groups=groups, **kwargs)

    def optimizer(self, optimizer: Union[str, keras.optimizers.Optimizer, type] = "sgd",
                  **kwargs: Any) -> keras.optimizers.Optimizer:
        """A tfdp DP optimizer with the plan's clip, noise, expected batch size and budget.

        `optimizer` is a Keras 3 optimizer instance, which the result wraps as it is
        (`tfdp.DPOptimizer`: AdamW, Lion, a learning-rate schedule, use_ema, gradient
        accumulation, ...; one already built keeps its slots, and the plan's budget counts
        only the steps taken through the wrapper), or "sgd", "adam", "adagrad" or a Keras 3
        optimizer class, built with `kwargs` as its arguments (e.g. learning_rate=0.5).
        `kwargs` also take the DP optimizer's own options that the plan does not fix (e.g.
        on_nonfinite="skip", name=...).
        """
        from tfdp import optimizers as dp_optimizers  # pylint: disable=import-outside-toplevel

        plan_arguments = dict(**self._query_arguments(), expected_batch_size=self.batch_size,
                              floating_point_safe_noise=self.floating_point_safe_noise,
                              max_steps=self.steps)
        if isinstance(optimizer, keras.optimizers.Optimizer):
            if isinstance(optimizer, dp_optimizers.DPOptimizer):
                raise ValueError("Give the plan the Keras optimizer to wrap, not a DP optimizer: "
                                 "the plan sets the clip, the noise and the budget.")
            keras_arguments = sorted(set(kwargs) - set(_DP_OPTIONS))
            if keras_arguments:
                raise ValueError(
                    f"Configure the optimizer instance itself; got {keras_arguments} beside it "
                    "(the plan passes only the DP optimizer's options on).")
            return dp_optimizers.DPOptimizer(optimizer, **plan_arguments, **kwargs)
        if isinstance(optimizer, str):
            name = _OPTIMIZER_NAMES.get(optimizer.lower())
            if name is None:
                raise ValueError(f"optimizer must be one of {sorted(_OPTIMIZER_NAMES)}, a "
                                 f"Keras optimizer class or instance; got {optimizer!r}.")
            cls = getattr(dp_optimizers, name)
        else:
            cls = dp_optimizers.make_dp_keras_optimizer_class(optimizer)
        return cls(**plan_arguments, **kwargs)

    def make_private(self, model: keras.Model, **kwargs: Any) -> keras.Model:
        """`tfdp.make_private(model)` clipping the plan's unit (per group when grouped)."""
        from tfdp.training import make_private  # pylint: disable=import-outside-toplevel

        return make_private(model, grouped=self.grouped, **kwargs)

    def callback(self, **kwargs: Any) -> PrivacyCallback:
        """A `PrivacyCallback` on the plan's data size, batch size, unit and accountant."""
        return PrivacyCallback(self.num_examples, self.delta, batch_size=self.batch_size,
                               accountant=self.accountant, privacy_unit=self.privacy_unit,
                               **kwargs)

    def dp_event(self, steps: Optional[int] = None) -> dp_accounting.DpEvent:
        """The `dp_accounting` event of `steps` (default: all planned) regular noisy steps."""
        steps = self.steps if steps is None else check_positive_int("steps", steps)
        if self.banded:
            return get_mechanism(self.mechanism).dp_event(
                self.noise_multiplier, self.sampling_probability, steps, bands=self.bands)
        return composed_event(self.mechanism, self.noise_multiplier,
                              self.sampling_probability, steps)

    def epsilon(self, steps: Optional[int] = None,
                noisy_steps: Optional[int] = None) -> PrivacyResult:
        """The guarantee after `steps` (default: the whole plan), with its statement."""
        steps = self.steps if steps is None else check_positive_int("steps", steps)
        return compute_epsilon(
            self.num_examples, self.batch_size, self.noise_multiplier, steps=steps,
            delta=self.delta, mechanism=self.mechanism, noise_schedule=self.noise_schedule,
            noise_probability=self.noise_probability, on_skip=self.on_skip,
            accountant=self.accountant, noisy_steps=noisy_steps,
            privacy_unit=self.privacy_unit,
            floating_point_safe=self.floating_point_safe_noise, bands=self.bands)

    @property
    def statement(self) -> str:
        """The planned run's privacy statement."""
        return self.epsilon().statement

    # ----- Keras-style configuration -----

    def get_config(self) -> Dict[str, Any]:
        """Every field, the calibrated noise multiplier and the steps included."""
        return dataclasses.asdict(self)

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "PrivacyPlan":
        """The plan `get_config` described."""
        return cls(**config)

    def _query_arguments(self) -> Dict[str, Any]:
        arguments = dict(mechanism=self.mechanism, noise_schedule=self.noise_schedule,
                         noise_probability=self.noise_probability, on_skip=self.on_skip,
                         l2_norm_clip=self.l2_norm_clip, l1_norm_clip=self.l1_norm_clip,
                         noise_multiplier=self.noise_multiplier)
        if self.banded:
            arguments["bands"] = self.bands
        return arguments


def _plain(value: Any) -> str:
    return str(getattr(value, "value", value))


def _num_rows(x: Any) -> int:
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    leaves = tf.nest.flatten(x)
    if not leaves or not getattr(leaves[0], "shape", None):
        raise ValueError("`x` must hold arrays with examples on axis 0.")
    return int(leaves[0].shape[0])
