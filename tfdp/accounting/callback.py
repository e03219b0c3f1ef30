"""PrivacyCallback: epsilon from the optimizer's ledger in the Keras epoch logs; budget stop."""

from __future__ import annotations

import warnings
from typing import Any, Dict, Optional

import keras

from tfdp._validation import check_choice, check_positive, check_positive_int
from tfdp.accounting.epsilon import check_delta, check_privacy_unit
from tfdp.accounting.ledger import (check_divides_by_expected_batch, check_dp_optimizer,
                                   epsilon_for_steps, ledger_batch_size, read_ledger)
from tfdp.accounting.privacy_result import PrivacyResult
from tfdp.mechanisms import NoiseSchedule, OnSkip, Sampling, values
TARGET_METRICS = ("epsilon", "epsilon_noisy_steps_only")


class PrivacyCallback(keras.callbacks.Callback):
    """Writes `epsilon` (and, for the random schedule, `epsilon_noisy_steps_only`) to epoch logs.

    At each epoch end it reads the tfdp DP optimizer's public ledger
    (`iterations`, `noisy_steps`, `dropped_steps`, `largest_batch_size`,
    `dp_settings`) and runs `compute_epsilon` on those counters, so the figure
    shows in the progress bar, `History`, `CSVLogger` and `TensorBoard`
    (list this callback before CSVLogger/TensorBoard in `callbacks=[...]`).
    The last `PrivacyResult` is kept in `self.result`. With sampling="poisson", an
    optimizer without `expected_batch_size` (which divides by the realized batch
    size, a data-dependent release) is refused when training begins.

    Args:
      num_examples: training examples n.
      delta: the delta of the guarantee, in (0, 1).
      target_epsilon: when given, training stops (`model.stop_training`) after
        an epoch when the next epoch, at the step count the last epoch took
        with every step noisy, would go past it.
      sampling: "poisson" (batches from `tfdp.data.poisson_batches`) or
        "shuffle" (plain `model.fit` batches); see `compute_epsilon`.
      batch_size: the (expected) batch size. Default: the optimizer's
        `expected_batch_size`, else the largest batch this process has seen (an
        in-memory count: refused for an optimizer restored after earlier steps).
      accountant: None, "rdp" or "pld" (as in `compute_epsilon`).
      target_metric: which figure `target_epsilon` limits: "epsilon" (the
        formal guarantee) or "epsilon_noisy_steps_only" (the paper's convention
        for the released random schedule; not a guarantee).
      verbose: 1 prints a line when training is stopped for the budget.
      privacy_unit: "example", or the group's name (e.g. "patient") for a model
        made with `make_private(model, grouped=True)` trained on
        `tfdp.data.poisson_batches(..., groups=ids)`; then `num_examples` is the
        number of groups. A mismatch with the model's clipping is refused.
    """

    def __init__(
        self,
        num_examples: int,
        delta: float = 1e-5,
        *,
        target_epsilon: Optional[float] = None,
        sampling: str = Sampling.POISSON,
        batch_size: Optional[float] = None,
        accountant: Optional[str] = None,
        target_metric: str = "epsilon",
        verbose: int = 1,
        privacy_unit: str = "example",
    ):
        super().__init__()
        self.num_examples = check_positive_int("num_examples", num_examples)
        self.delta = check_delta(delta)
        self.target_epsilon = (
            None if target_epsilon is None else check_positive("target_epsilon", target_epsilon)
        )
        self.sampling = check_choice("sampling", sampling, values(Sampling))
        self.batch_size = None if batch_size is None else check_positive("batch_size", batch_size)
        self.accountant = accountant
        self.target_metric = check_choice("target_metric", target_metric, TARGET_METRICS)
        self.verbose = verbose
        self.privacy_unit = check_privacy_unit(privacy_unit, self.sampling)
        self.result: Optional[PrivacyResult] = None
        # The batches' SamplingTag, when a make_private model's fit saw one.
        self.sampling_tag: Optional[Any] = None
        self.stopped_epoch: Optional[int] = None
        self._steps_at_epoch_start = 0

    # ----- reading the ledger -----

    def _optimizer(self):
        return check_dp_optimizer(getattr(self.model, "optimizer", None), "PrivacyCallback")

    @staticmethod
    def _ledger(optimizer) -> Dict[str, int]:
        return read_ledger(optimizer)

    def _batch_size(self, optimizer, ledger) -> Optional[float]:
        return ledger_batch_size(optimizer, ledger, self.batch_size)

    def epsilon_for(self, optimizer, steps: int, noisy_steps: int, batch_size) -> PrivacyResult:
        """compute_epsilon on the given counters and the optimizer's settings."""
        return epsilon_for_steps(
            optimizer, self.num_examples, steps, noisy_steps, batch_size=batch_size,
            delta=self.delta, sampling=self.sampling, accountant=self.accountant,
            privacy_unit=self.privacy_unit,
            secret_batches=self.sampling_tag is None or self.sampling_tag.secret_randomness,
        )

    def observe_sampling(self, tag: Any) -> None:
        """Records the `SamplingTag` of the batches `fit` trains on (`tfdp.plan.check_fit`).

        The statement then says whether the batches, too, came from secret randomness.
        """
        self.sampling_tag = tag

    # ----- Keras hooks -----

    def _check_unit(self) -> None:
        self.check_model(self.model)

    def check_model(self, model: Any) -> None:
        """Refuses a privacy unit `model` does not clip by (an overstated guarantee)."""
        options = getattr(model, "step_options", None)
        if options is None:  # a custom loop: the caller vouches for its units
            return
        if options.grouped and self.privacy_unit == "example":
            raise ValueError(
                "The model clips each group's gradient (make_private(..., grouped=True)) and "
                "its ledger counts groups: give PrivacyCallback the number of groups as "
                "num_examples and their name, e.g. privacy_unit='patient'.")
        if not options.grouped and self.privacy_unit != "example":
            raise ValueError(
                f"privacy_unit={self.privacy_unit!r}, but the model clips each example: a "
                f"per-{self.privacy_unit} guarantee needs tfdp.make_private(model, "
                f"grouped=True) and batches from tfdp.data.poisson_batches(..., groups=ids).")

    def on_train_begin(self, logs: Optional[Dict[str, Any]] = None) -> None:
        self._check_unit()
        optimizer = self._optimizer()
        ledger = self._ledger(optimizer)
        self._steps_at_epoch_start = ledger["steps"]
        settings = optimizer.dp_settings
        # An optimizer that divides by the realized batch size is not what Poisson covers.
        check_divides_by_expected_batch(optimizer, self.sampling, "PrivacyCallback")
        if ledger["steps"]:  # a resumed optimizer: refuse a batch size it cannot know, now
            self._batch_size(optimizer, ledger)
        if (
            self.target_epsilon is not None
            and self.target_metric == "epsilon"
            and settings.get("noise_schedule") == NoiseSchedule.RANDOM
            and settings.get("on_skip") == OnSkip.RELEASE
            and settings.get("noise_probability", 1.0) < 1.0
        ):
            warnings.warn(
                "target_epsilon limits the formal epsilon, which is infinite once a "
                "noiseless step is released (noise_schedule='random', on_skip='release'); "
                "training will stop after the first epoch. Pass "
                "target_metric='epsilon_noisy_steps_only' to limit the paper's figure "
                "(not a guarantee), or use on_skip='drop'.",
                stacklevel=2,
            )

    def on_train_batch_end(self, batch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        """Ends `fit` as soon as the optimizer's step budget (`max_steps`) is reached."""
        # Runs every batch: without a budget it reads nothing; with one, two counters only.
        optimizer = getattr(self.model, "optimizer", None)
        budget = getattr(optimizer, "max_steps", None)
        if budget is None:
            return
        taken = int(optimizer.iterations.numpy()) + int(optimizer.dropped_steps.numpy())
        if taken >= budget:
            if not self.model.stop_training and self.verbose:
                print(f"PrivacyCallback: the privacy budget's {budget} steps are taken; "
                      "stopping.")
            self.model.stop_training = True

    def on_epoch_begin(self, epoch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        self._steps_at_epoch_start = self._ledger(self._optimizer())["steps"]

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        logs = logs if logs is not None else {}
        optimizer = self._optimizer()
        ledger = self._ledger(optimizer)
        settings = optimizer.dp_settings
        random_schedule = settings.get("noise_schedule") == NoiseSchedule.RANDOM
        if ledger["steps"] == 0:
            logs["epsilon"] = 0.0
            if random_schedule:
                logs["epsilon_noisy_steps_only"] = 0.0
            return
        batch_size = self._batch_size(optimizer, ledger)
        self.result = self.epsilon_for(
            optimizer, ledger["steps"], ledger["noisy_steps"], batch_size
        )
        logs["epsilon"] = self.result.epsilon
        if random_schedule:
            logs["epsilon_noisy_steps_only"] = self.result.epsilon_noisy_steps_only
        if self.target_epsilon is not None:
            self._check_budget(epoch, optimizer, ledger, batch_size)

    def _check_budget(self, epoch, optimizer, ledger, batch_size) -> None:
        """Stops training now if the budget is spent or the next epoch would overspend it."""
        current = getattr(self.result, self.target_metric)
        reason = None
        if current > self.target_epsilon:
            reason = (
                f"{self.target_metric} = {current:.4g} already exceeds target_epsilon = "
                f"{self.target_epsilon:g}"
            )
        else:
            # Predict with the last epoch's step count, every step noisy (the worst case).
            steps_per_epoch = max(1, ledger["steps"] - self._steps_at_epoch_start)
            upcoming = ledger["steps"] + steps_per_epoch
            predicted = getattr(
                self.epsilon_for(
                    optimizer, upcoming, ledger["noisy_steps"] + steps_per_epoch, batch_size
                ),
                self.target_metric,
            )
            if predicted > self.target_epsilon:
                reason = (
                    f"one more epoch would bring {self.target_metric} to about "
                    f"{predicted:.4g} > target_epsilon = {self.target_epsilon:g}"
                )
        if reason is not None:
            self.model.stop_training = True
            self.stopped_epoch = epoch
            if self.verbose:
                print(f"PrivacyCallback: stopping after epoch {epoch + 1}: {reason}.")
