"""The DP optimizer: a wrapper around any Keras 3 optimizer instance that runs a sum DPQuery.

`DPOptimizer(inner_optimizer, ...)` holds the privacy ledger, the query and the secret
noise and sampling state; the inner optimizer (SGD, Adam, AdamW, Lion, with a learning-rate
schedule, EMA, gradient accumulation, ...) only ever sees the privatized gradients and keeps
its own update rule and slots. Keras's `LossScaleOptimizer` is the pattern. The classes
`DPKerasSGDOptimizer`, `DPKerasAdamOptimizer`, `DPKerasAdagradOptimizer` and those of
`make_dp_keras_optimizer_class` are thin entry points that build the inner optimizer from
their Keras arguments; their saved configuration keeps the flat layout of the subclasses
they replace, and files or checkpoints written by those still load (`load_own_variables`,
`restore_legacy_checkpoint`).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Dict, List, Optional, Type

import dp_accounting
import keras
import numpy as np
import tensorflow as tf
from keras.src.utils import tracking as keras_tracking

from tfdp._tf_privacy import dp_query
from tfdp._validation import check_choice, check_positive_int
from tfdp.mechanisms import (
    NO_NOISE,
    NoiseSchedule,
    OnSkip,
    describe_query,
    get_mechanism,
    mechanism_names,
    make_dp_sum_query,
    query_from_config,
    query_to_config,
)
from tfdp.queries import OUTCOME_DROPPED, OUTCOME_NOISY, RandomizedNoiseQuery
from tfdp.queries.seeded import SETTINGS_RTOL, settings_agree
from tfdp.queries.banded_mf_sum_query import BandedMFSumQuery
from tfdp.randomness import SecretKey, check_insecure_seed, warn_seed_ignored
from tfdp.randomness.correlated import BandedNoise
from tfdp.optimizers.clipping import SKIP_NEEDS_ISOLATION, clip_and_sum, finite_units
from tfdp.optimizers.diagnostics import InMemoryCounters
from tfdp.optimizers.gradient_canaries import GradientCanaryBlock
from tfdp.optimizers.per_example_loss import per_unit_losses

_Optimizer = keras.optimizers.Optimizer
_logger = logging.getLogger("tfdp")
_JACOBIAN_HINT = (
    "tfdp: DP optimizer.minimize computes per-example gradients with a Jacobian, which is one "
    "to two orders of magnitude slower than non-private training. For Keras models, "
    "tfdp.make_private(model) computes the same clipped gradients from the layers' inputs."
)
_hinted = []
# make_dp_keras_optimizer_class's classes, one per Keras optimizer class.
_DP_CLASSES: Dict[type, type] = {}
# Folded into a step seed to make the microbatch assignment's stream ("mbat").
_MICROBATCH_STREAM = 0x6D626174
_NOT_PRIVATE_MESSAGE = (
    "{name} received gradients that did not go through the DP query: a Keras 3 optimizer only "
    "sees the batch-averaged gradient, so per-example clipping must happen in the model's "
    "train_step. Wrap the model before compiling: `model = tfdp.make_private(model)`, then "
    "`model.compile(optimizer=<this optimizer>, loss=<a loss with reduction=None>)`. In a custom "
    "loop, call `optimizer.minimize(per_example_losses, var_list, tape=tape)`. Nothing was "
    "applied."
)

# The convenience arguments, in the order of the public signature (docs/api/core.md).
_DP_ARGUMENTS = (
    "mechanism",
    "noise_schedule",
    "noise_probability",
    "on_skip",
    "l2_norm_clip",
    "l1_norm_clip",
    "noise_multiplier",
    "floating_point_safe_noise",
)
# The other DP arguments `get_config` writes (and the entry points take by keyword).
_OTHER_DP_ARGUMENTS = (
    "dp_sum_query",
    "num_microbatches",
    "expected_batch_size",
    "seed",
    "on_nonfinite",
    "insecure_reproducible_seed",
    "max_steps",
    "bands",
    "strategy_coefficients",
)
# Keras optimizer settings that belong to the inner optimizer: the wrapper reads them from it.
_INNER_SETTINGS = (
    "weight_decay",
    "use_ema",
    "ema_momentum",
    "ema_overwrite_frequency",
    "gradient_accumulation_steps",
    "clipnorm",
    "clipvalue",
    "global_clipnorm",
)


def _no_learning_rate() -> float:
    # The wrapper's own (unused) learning rate: a callable, so Keras creates no variable for
    # it; `learning_rate` reads and sets the inner optimizer's.
    return 0.0


class _InnerSetting:
    """A Keras optimizer setting of the wrapper that is its inner optimizer's.

    Keras's base `__init__` assigns every setting; before the inner optimizer is attached
    those assignments (the defaults) are ignored. Afterwards reads and writes go to the inner
    optimizer, so `optimizer.use_ema` (read by callbacks and tfdp.run) tells the truth.
    """

    def __init__(self, name: str):
        self._name = name

    def __get__(self, obj, objtype=None):
        if obj is None:
            return self
        inner = obj.__dict__.get("inner_optimizer")
        return None if inner is None else getattr(inner, self._name)

    def __set__(self, obj, value):
        inner = obj.__dict__.get("inner_optimizer")
        if inner is not None:
            setattr(inner, self._name, value)


@keras.saving.register_keras_serializable(package="tfdp", name="DPOptimizer")
class DPOptimizer(_Optimizer):
    """Differentially private training around any Keras 3 optimizer instance.

    Each step: one gradient per example (or per microbatch), each clipped and summed by
    the sum query, noise added by it (Gaussian or Laplace, every step or on a random subset
    of steps), divided by the number of units, then handed to `inner_optimizer`, whose update
    rule, learning rate (or schedule), slots, weight decay, EMA and gradient accumulation
    apply unchanged. The ledger (`iterations`, `noisy_steps`, `dropped_steps`), the query's
    state and the secret key live in this wrapper; the inner optimizer never sees a
    gradient that did not pass the query. Compile it into a `tfdp.make_private(model)`:
    Keras 3 optimizers only see averaged gradients, so the model's train_step does the
    per-example clipping.

        optimizer = tfdp.DPOptimizer(keras.optimizers.AdamW(1e-3, weight_decay=1e-4),
                                     l2_norm_clip=1.0, noise_multiplier=1.1)

    Args:
      inner_optimizer: a Keras 3 optimizer instance. It becomes part of this optimizer
        (built, applied, saved and restored with it): do not use it elsewhere. One already
        built is accepted (its slots and step count carry on); the ledger starts at zero.
      dp_sum_query: a TF Privacy SumAggregationDPQuery. When given, the
        convenience arguments below must be left at their defaults.
      mechanism: "gaussian" (L2 clip, Gaussian noise) or "laplace" (L1 clip,
        Laplace noise).
      noise_schedule: "regular" (noise every step) or "random" (noise when a
        Bernoulli(noise_probability) coin is 1).
      noise_probability: p of the random schedule.
      on_skip: what a noiseless step of the random schedule does: "release"
        the exact clipped gradient (the paper's method, no formal DP) or
        "drop" the step (no update; DP over the noisy steps).
      l2_norm_clip / l1_norm_clip: the per-unit clip (L2 for Gaussian, L1 for
        Laplace).
      noise_multiplier: noise std (Gaussian) or scale (Laplace) over the clip.
      num_microbatches: None (one unit per example, any batch size) or M, the
        number of microbatches of every batch: each example joins one of the M
        uniformly at random, from this optimizer's secret key (never by its
        position, which would let one added example shift every microbatch), a
        microbatch's gradient is that of its examples' mean loss, and the noised
        sum is divided by M (empty microbatches contribute zero). One example then
        moves one microbatch's clipped gradient by up to twice the clip, so the
        accountant uses half the noise multiplier (`used_microbatching`).
      expected_batch_size: divide the noised sum by this instead of the
        realized batch size (the unbiased choice under Poisson sampling).
      seed: no longer used (a warning says so): the noise and the random schedule's
        coin come from a secret key drawn from the operating system's entropy when
        the optimizer is built, held in memory only (`tfdp.randomness.SecretKey`).
      floating_point_safe_noise: False (the default): textbook floating-point noise,
        whose low-order bits can leak the clipped sum. True: the sum is rounded onto
        a fine grid and integer noise added there (`tfdp.randomness.grid`), with the
        same accounting; costs more per step (see the benchmark).
      insecure_reproducible_seed: for research and tests only: derive the noise
        and the coin from this seed instead, so anyone who knows it can replay
        them; the privacy statement then says the guarantee holds only against
        someone who does not know it.
      on_nonfinite: "raise" (stop with an error when an example's loss or gradient
        is NaN/inf; the step still counts in the ledger, since it touched data) or
        "skip" (such an example contributes zero, which keeps the step's DP
        guarantee; `optimizer.skipped_examples` counts them). "skip" needs the
        examples isolated from one another, which `tfdp.make_private`'s fast path
        does (its layer rules and per-layer VJPs). It is refused (ValueError when
        the first step is traced) on the Jacobian path: `minimize` /
        `private_gradients` in a custom loop, and make_private with
        num_microbatches, a query without an L2/L1 clip, use_fast_path=False or a
        variable its plan sends to the whole-model Jacobian (a tied embedding).
        There one NaN/inf example makes every unit's Jacobian row non-finite (the
        batched backward multiplies it by zeros), so "skip" would zero the whole
        batch: one record would move the sum by up to batch size x clip.
      max_steps: the privacy budget in steps (a `tfdp.PrivacyPlan` sets it): a step
        past it is refused before anything is applied or counted (an error that says
        so), and `PrivacyCallback` ends `fit` when it is reached. None: no budget.
      bands: mechanism="banded_mf" only (then required): b, the diagonals of the banded
        Toeplitz strategy whose correlated noise C^-1 z is added (DP matrix
        factorization); train on `tfdp.data.cyclic_poisson_batches` with the same b. The
        recurrence's b-1 past noise outputs are held in memory only (never saved): a
        restored or resumed optimizer restarts it.
      strategy_coefficients: mechanism="banded_mf" only: the strategy's c_0..c_{b-1}
        (default `tfdp.mechanisms.banded_toeplitz_coefficients(bands)`; see
        `optimize_banded_toeplitz`).
      name: this optimizer's name.
    """

    def __init__(
        self,
        inner_optimizer: _Optimizer,
        *,
        dp_sum_query: Optional[dp_query.SumAggregationDPQuery] = None,
        mechanism: str = "gaussian",
        noise_schedule: str = NoiseSchedule.REGULAR,
        noise_probability: float = 1.0,
        on_skip: str = OnSkip.RELEASE,
        l2_norm_clip: Optional[float] = None,
        l1_norm_clip: Optional[float] = None,
        noise_multiplier: Optional[float] = None,
        floating_point_safe_noise: bool = False,
        num_microbatches: Optional[int] = None,
        expected_batch_size: Optional[int] = None,
        seed: Optional[int] = None,
        on_nonfinite: str = "raise",
        insecure_reproducible_seed: Optional[int] = None,
        max_steps: Optional[int] = None,
        bands: Optional[int] = None,
        strategy_coefficients: Optional[Any] = None,
        name: Optional[str] = None,
    ):
        if not isinstance(inner_optimizer, _Optimizer):
            raise ValueError(
                "DPOptimizer wraps a Keras 3 optimizer instance (e.g. "
                f"keras.optimizers.AdamW(1e-3)), got {inner_optimizer!r}. tf-keras / "
                "keras.optimizers.legacy optimizers are not supported: use `import keras`.")
        if isinstance(inner_optimizer, DPOptimizer):
            raise ValueError("The inner optimizer is already a DP optimizer: wrap the Keras "
                             "optimizer itself (noise would otherwise be added twice).")
        if isinstance(inner_optimizer, keras.optimizers.LossScaleOptimizer):
            raise ValueError("A LossScaleOptimizer cannot be the inner optimizer: its "
                             "unscaling and skipped steps would act on the private gradients. "
                             "Wrap the optimizer it holds.")
        super().__init__(learning_rate=_no_learning_rate, name=name)
        # Set before anything reads the settings `_InnerSetting` forwards. Tracked under
        # this name in checkpoints, and saved with it in `.keras` files.
        self.inner_optimizer = inner_optimizer
        if seed is not None:
            warn_seed_ignored(type(self).__name__, "the noise or the random schedule's coin")
        self._insecure_seed = check_insecure_seed(insecure_reproducible_seed)
        dp_arguments = dict(
            mechanism=mechanism,
            noise_schedule=noise_schedule,
            noise_probability=noise_probability,
            on_skip=on_skip,
            l2_norm_clip=l2_norm_clip,
            l1_norm_clip=l1_norm_clip,
            noise_multiplier=noise_multiplier,
            floating_point_safe_noise=bool(floating_point_safe_noise),
        )
        # Only present for the banded mechanism: other optimizers' configs are unchanged.
        if bands is not None:
            dp_arguments["bands"] = bands
        if strategy_coefficients is not None:
            dp_arguments["strategy_coefficients"] = [float(c) for c in np.ravel(
                strategy_coefficients)]
        if dp_sum_query is not None:
            defaults = dict(
                mechanism="gaussian", noise_schedule=NoiseSchedule.REGULAR,
                noise_probability=1.0, on_skip=OnSkip.RELEASE, l2_norm_clip=None,
                l1_norm_clip=None, noise_multiplier=None, floating_point_safe_noise=False,
            )
            clashing = [k for k, v in dp_arguments.items() if v != defaults.get(k)]
            if clashing:
                raise ValueError(
                    "Give either `dp_sum_query` or the convenience arguments, not both; "
                    f"also got {clashing}."
                )
            if isinstance(dp_sum_query, dict):
                dp_sum_query = query_from_config(dp_sum_query)
            if not isinstance(dp_sum_query, dp_query.SumAggregationDPQuery):
                raise ValueError(
                    "`dp_sum_query` must be a tensorflow_privacy SumAggregationDPQuery "
                    f"(e.g. GaussianSumQuery), got {type(dp_sum_query).__name__}."
                )
            self._dp_arguments = None
            dp_sum_query = _with_seeded_noise(dp_sum_query)
        else:
            query_arguments = dict(dp_arguments)
            query_arguments["floating_point_safe"] = query_arguments.pop(
                "floating_point_safe_noise")
            dp_sum_query = make_dp_sum_query(**query_arguments)
            self._dp_arguments = dp_arguments
        if num_microbatches is not None:
            num_microbatches = check_positive_int("num_microbatches", num_microbatches)
        if expected_batch_size is not None:
            expected_batch_size = check_positive_int("expected_batch_size", expected_batch_size)
            if num_microbatches is not None:
                raise ValueError(
                    "`expected_batch_size` applies to per-example clipping; leave "
                    "`num_microbatches` at None when you set it."
                )
        if isinstance(dp_sum_query, BandedMFSumQuery) and num_microbatches is not None:
            raise ValueError(
                "num_microbatches cannot be used with mechanism='banded_mf': the cyclic "
                "Poisson accounting assumes one clipped gradient per example. Leave "
                "num_microbatches at None.")
        self._on_nonfinite = check_choice("on_nonfinite", on_nonfinite, ("raise", "skip"))
        self._max_steps = None if max_steps is None else check_positive_int(
            "max_steps", max_steps)
        self._dp_sum_query = dp_sum_query
        self._num_microbatches = num_microbatches
        self._expected_batch_size = expected_batch_size
        self._noised_coordinates: Optional[int] = None
        # Set by privatize_clipped_sum, consumed by apply. Thread-local because
        # MirroredStrategy runs (and traces) each replica in its own thread.
        self._private_gradients_ready = threading.local()
        # banded_mf: the correlated noise's recurrence (`BandedNoise`), built with the
        # optimizer. A plain attribute, never a Keras-tracked one: no checkpoint or file
        # holds its past noise. `_banded_next_step`: the ledger step the recurrence expects
        # next; any other step (a restore) restarts it.
        self._banded_noise: Optional[BandedNoise] = None
        self._banded_next_step: Optional[tf.Variable] = None
        # White-box audit canaries (`add_gradient_canaries`); None in every normal run.
        self._gradient_canaries: Optional[GradientCanaryBlock] = None
        # The ledger exists from construction: under a tf.distribute strategy its
        # variables must be created in the strategy's scope, not inside a replica step.
        self._create_dp_weights()

    # ----- the inner optimizer -----

    @property
    def learning_rate(self):
        """The inner optimizer's learning rate (its current value under a schedule)."""
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.inner_optimizer.learning_rate = learning_rate

    def __getattr__(self, name: str) -> Any:
        # Only for names the wrapper lacks: the inner optimizer's public settings
        # (momentum, beta_1, amsgrad, ...). Private names are never forwarded, so Keras's and
        # TensorFlow's probing of the wrapper's own state is unaffected.
        inner = self.__dict__.get("inner_optimizer")
        if inner is None or name.startswith("_"):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(inner, name)

    @property
    def iterations(self) -> keras.Variable:
        """Applied private steps (dropped steps are in `dropped_steps`), counted by the wrapper.

        Its own counter, not the inner optimizer's: every step that released a noised
        gradient counts once, whatever the inner optimizer does with it (gradient
        accumulation divides its own `iterations`).
        """
        return self._iterations

    @property
    def variables(self) -> List[keras.Variable]:
        """The wrapper's variables (step counter, ledger, query state), then the inner's."""
        return self._variables[:] + self.inner_optimizer.variables

    # As Keras's own build: the model's variables are not this optimizer's to track.
    @keras_tracking.no_automatic_dependency_tracking
    def build(self, var_list):
        """Builds the inner optimizer (its slots) on the model's variables, then the wrapper."""
        var_list = list(var_list)
        if not self.inner_optimizer.built:
            with keras.name_scope(self.inner_optimizer.name, caller=self.inner_optimizer):
                self.inner_optimizer.build(var_list)
            self.inner_optimizer.built = True
        # Not Keras's base build: the EMA and accumulator variables are the inner's.
        for i, variable in enumerate(var_list):
            self._trainable_variables_indices[self._var_key(variable)] = i
        self._trainable_variables = var_list[:]
        self._build_banded_noise([v.shape for v in var_list])
        self.built = True

    def _build_banded_noise(self, shapes) -> None:
        """The banded mechanism's noise recurrence over tensors of `shapes` (once)."""
        query = self._dp_sum_query
        if not isinstance(query, BandedMFSumQuery) or self._banded_noise is not None:
            return
        self._banded_noise = BandedNoise(query.coefficients, shapes, name="dp_banded_noise")
        with tf.init_scope():
            self._banded_next_step = tf.Variable(
                np.int64(0), trainable=False, name="dp_banded_next_step",
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    @property
    def banded_noise(self) -> Optional[BandedNoise]:
        """The banded mechanism's in-memory noise recurrence (None for other mechanisms)."""
        return self._banded_noise

    def reset_banded_noise(self) -> None:
        """Restarts the banded mechanism's recurrence (zero history): after a restore."""
        if self._banded_noise is not None:
            self._banded_noise.reset()

    def finalize_variable_values(self, var_list):
        """The inner optimizer's end of training (it writes its EMA into the model)."""
        self.inner_optimizer.finalize_variable_values(var_list)

    def exclude_from_weight_decay(self, var_list=None, var_names=None):
        """The inner optimizer's weight-decay exclusions."""
        self.inner_optimizer.exclude_from_weight_decay(var_list=var_list, var_names=var_names)

    # ----- the ledger: counters and the query's state, as optimizer weights -----

    def _add_dp_variable(self, name, value):
        value = np.asarray(value)
        return self.add_variable(
            shape=value.shape,
            initializer=lambda shape, dtype: tf.constant(value, dtype=dtype),
            dtype=value.dtype.name,
            # Replicas assign identical values (the noise and the coin are drawn once).
            aggregation="only_first_replica",
            name=name,
        )

    def _create_dp_weights(self):
        # Fixed creation order (the wrapper's iterations, then the ledger; the inner
        # optimizer's variables follow in `variables`): saved optimizer variables are
        # restored by position.
        with tf.init_scope():
            self._noisy_steps = self._add_dp_variable("dp_noisy_steps", np.int64(0))
            self._dropped_steps = self._add_dp_variable("dp_dropped_steps", np.int64(0))
            # Retired placeholders, always 0: these two slots held the largest realized
            # batch size and the count of skipped (non-finite) examples, exact
            # data-dependent counts that went into every saved file. Saved optimizer
            # variables are restored by position, so the slots stay (files saved before
            # still load) but hold nothing: every step and every load resets them to 0.
            # The counts live in `self._in_memory`, which nothing saves.
            self._retired_slots = (
                self._add_dp_variable("dp_largest_batch_size", np.int64(0)),
                self._add_dp_variable("dp_skipped_examples", np.int64(0)),
            )
            self._in_memory = InMemoryCounters()
            # Not an optimizer variable: no checkpoint or saved file may hold the key.
            self._secret_key = SecretKey("noise", self._insecure_seed)
            initial_state = self._dp_sum_query.initial_global_state()
            self._query_state_variables = tf.nest.pack_sequence_as(
                initial_state,
                [
                    self._add_dp_variable(f"dp_query_state_{i}", tf.get_static_value(leaf))
                    for i, leaf in enumerate(tf.nest.flatten(initial_state))
                ],
            )

    @property
    def noisy_steps(self) -> keras.Variable:
        """Number of steps whose update carried noise."""
        return self._noisy_steps

    @property
    def dropped_steps(self) -> keras.Variable:
        """Number of steps dropped by the random schedule (no update, not in `iterations`)."""
        return self._dropped_steps

    @property
    def largest_batch_size(self) -> tf.Variable:
        """Largest number of examples seen in one step by this process.

        An in-memory diagnostic (exact and data-dependent): never saved, 0 again
        after a restore, so a resumed run must account with a stated batch size.
        """
        return self._in_memory.largest_batch_size

    @property
    def skipped_examples(self) -> tf.Variable:
        """Units with a non-finite loss or gradient skipped by this process
        (on_nonfinite="skip"); in memory only, never saved."""
        return self._in_memory.skipped_examples

    @property
    def steps_in_this_process(self) -> tf.Variable:
        """Private steps this optimizer took in this process (in memory, never saved).

        Fewer than the ledger's steps after a restore: the in-memory counts
        (`largest_batch_size`) then miss the earlier steps.
        """
        return self._in_memory.steps_in_this_process

    @property
    def max_steps(self) -> Optional[int]:
        """The budget in steps (applied + dropped) this optimizer may take; None: no budget."""
        return self._max_steps

    @property
    def on_nonfinite(self) -> str:
        """What a NaN/inf loss or gradient does: "raise" or "skip"."""
        return self._on_nonfinite

    @property
    def secret_randomness(self) -> bool:
        """False only when `insecure_reproducible_seed` makes the noise reproducible."""
        return not self._secret_key.reproducible

    @property
    def dp_sum_query(self) -> dp_query.SumAggregationDPQuery:
        """The query that clips and noises the gradients."""
        return self._dp_sum_query

    @property
    def step_dp_event(self) -> Optional[dp_accounting.DpEvent]:
        """The `dp_accounting.DpEvent` of one step of this optimizer, before sampling.

        Built by the query's mechanism (`tfdp.mechanisms`) from `dp_settings`, with the
        multiplier the accountant composes (halved under microbatching). A random
        schedule that releases noiseless steps (p < 1) gives `NonPrivateDpEvent`: such a
        step may not be private. None for a query tfdp cannot account for.
        """
        settings = self.dp_settings
        mechanism = settings["mechanism"]
        if mechanism == NO_NOISE or (mechanism in mechanism_names()
                                     and not settings["noise_multiplier"]):
            return dp_accounting.NonPrivateDpEvent()
        if mechanism not in mechanism_names():
            return None
        if (settings["noise_schedule"] == NoiseSchedule.RANDOM
                and settings["on_skip"] == OnSkip.RELEASE
                and settings["noise_probability"] < 1.0):
            return dp_accounting.NonPrivateDpEvent()
        divisor = 2.0 if settings["used_microbatching"] else 1.0
        return get_mechanism(mechanism).step_event(settings["noise_multiplier"] / divisor)

    @property
    def num_microbatches(self) -> Optional[int]:
        """Microbatches per batch, or None for one per example."""
        return self._num_microbatches

    def microbatch_seed(self) -> Optional[tf.Tensor]:
        """This step's secret [2] int64 seed assigning examples to microbatches.

        None without microbatches. Its own draw from the secret key (apart from the
        noise's), so the assignment is independent of the data and of the noise.
        """
        if self._num_microbatches is None:
            return None
        step_seed = self._secret_key.step_seed(self.iterations + self._dropped_steps)
        return tf.random.experimental.stateless_fold_in(step_seed, _MICROBATCH_STREAM)

    @property
    def dp_settings(self) -> Dict[str, Any]:
        """The privacy-relevant settings, as the accountant and exports read them.

        `used_microbatching` is True when a unit may hold several examples: one
        example then moves a clipped unit gradient by up to twice the clip, so
        the accountant must use half the noise multiplier.
        """
        settings = describe_query(self._dp_sum_query)
        settings.update(
            num_microbatches=self._num_microbatches,
            used_microbatching=self._num_microbatches is not None,
            expected_batch_size=self._expected_batch_size,
            max_steps=self._max_steps,
            secret_randomness=self.secret_randomness,
            # Coordinates noised per step (None before the first step): the grid
            # noise's arithmetic excess grows with them.
            noised_coordinates=self._noised_coordinates,
        )
        return settings

    def query_global_state(self):
        """The query's current global state (a nest of tensors read from the weights)."""
        return tf.nest.map_structure(tf.convert_to_tensor, self._query_state_variables)

    # ----- white-box audit canaries -----

    def add_gradient_canaries(self, included, sampling_rate: float,
                              seed: Optional[int] = None) -> GradientCanaryBlock:
        """Carries audit canaries through every step's noise (`gradient_canaries.py`).

        Canary i, when `included[i]`, joins each step with probability
        `sampling_rate` as a gradient of norm equal to the clip on its own extra
        coordinate, noised by this optimizer's query with the model's gradients;
        `gradient_canary_scores()` then gives the white-box auditor's scores. Only
        for audit runs: the model's update is unchanged, but the canaries are
        extra records of the mechanism. Call before the first step.
        """
        if self.iterations.numpy() > 0:
            raise ValueError("Add gradient canaries before the first training step.")
        if isinstance(self._dp_sum_query, BandedMFSumQuery):
            raise ValueError("Gradient canaries (the white-box audit) assume independent "
                             "noise per step; audit mechanism='gaussian', not 'banded_mf'.")
        self._gradient_canaries = GradientCanaryBlock(included, sampling_rate, seed)
        return self._gradient_canaries

    def gradient_canary_scores(self) -> np.ndarray:
        """The white-box auditor's score of every canary (higher: more likely included)."""
        if self._gradient_canaries is None:
            raise ValueError("This optimizer carries no gradient canaries: call "
                             "add_gradient_canaries(included, sampling_rate) before training.")
        return self._gradient_canaries.scores()

    # ----- the private gradient -----

    def privatize_clipped_sum(self, clipped_sum, num_units, batch_size, nonfinite_units=0):
        """Noises a sum of clipped unit gradients and returns the averaged gradients.

        The sum must come from the query's own `preprocess_record` clipping (or
        an equivalent bound). Advances the query state and the counters, and
        marks the gradients as private for `apply`. This is the entry
        point for fast per-example paths that clip on their own.

        Under a `tf.distribute` strategy each replica passes the sum over its own
        examples: the sums are all-reduced and the noise is drawn once, on the
        first replica, so the global step carries exactly one noise draw
        calibrated to the clip (not one per replica). The random schedule's coin
        comes from the replicated query state, so every replica sees the same
        coin and applies the same update.
        """
        clipped_sum = tf.nest.flatten(clipped_sum)
        # Every ledger update depends on the data: under tf.function, ops that do not are
        # free to run even when the step fails to get a batch (the end of an iterator of
        # unknown length), which would count a step that never happened. The budget and
        # settings checks come first: a refused step draws no noise and moves no counter.
        checks = self._budget_checks() + self._state_checks()
        with tf.control_dependencies(clipped_sum + checks):
            return self._privatize(clipped_sum, num_units, batch_size, nonfinite_units)

    def _budget_checks(self):
        if self._max_steps is None:
            return []
        taken = self.iterations + self._dropped_steps
        return [tf.debugging.assert_less(
            taken, tf.constant(self._max_steps, taken.dtype),
            message=(
                f"tfdp: the privacy budget of {self._max_steps} steps is spent: training "
                f"took all {self._max_steps} planned steps, which the plan's epsilon "
                "covers. This step was refused and nothing was applied. Train with the "
                "plan's callback (plan.callback()), which ends fit at the budget, or make "
                "a new plan for more steps (a larger epsilon)."))]

    def _state_mismatches(self):
        """(name, state leaf, setting) of the query state's settings (clip, noise)."""
        query = self._dp_sum_query
        if not hasattr(query, "state_settings"):
            return []
        return query.state_settings(self.query_global_state())

    def _state_checks(self):
        """Refuses a query state whose clip or noise differs from this optimizer's settings.

        The clip and the noise come from the settings the accountant reads; a state
        holding other values was restored from a file saved with other settings, and
        training on would silently change them. Eagerly a ValueError, in a graph an
        assertion every update waits for.
        """
        checks = []
        for name, leaf, setting in self._state_mismatches():
            if tf.executing_eagerly():
                if not settings_agree(float(leaf), setting):
                    raise ValueError(_state_mismatch_message(name, setting, float(leaf)))
                continue
            leaf = tf.cast(leaf, tf.float64)
            tolerance = SETTINGS_RTOL * abs(setting) + 1e-12
            checks.append(tf.debugging.Assert(
                tf.abs(leaf - setting) <= tolerance,
                [_state_mismatch_message(name, setting), f"The state holds {name} =", leaf]))
        return checks

    def _zero_retired_slots(self):
        for slot in self._retired_slots:
            slot.assign(tf.zeros([], slot.dtype))

    def save_own_variables(self, store):
        """Saves `variables`: the wrapper's, then the inner optimizer's."""
        for i, variable in enumerate(self.variables):
            store[str(i)] = variable.numpy()

    def load_own_variables(self, store):
        """Keras's loading of the optimizer variables, refusing other DP settings.

        Four layouts load: today's (the wrapper's variables, then the inner optimizer's),
        and that of an optimizer saved before its first step (no slots yet: they keep
        their initial values); and the same two of a `.keras` file written before the DP
        optimizer became a wrapper, when one subclass held one list (`_legacy_variables`).
        The layout is the one whose length, shapes and dtypes match the file's. Any other
        raises a ValueError (a fresh ledger would undercount the steps taken). The retired
        slots of an older file (the exact largest batch, skipped examples) are zeroed:
        nothing data-dependent is carried into the next save.
        """
        own = self._variables[:]
        inner = self.inner_optimizer
        rate = inner._learning_rate  # pylint: disable=protected-access
        unbuilt_inner = [inner._iterations] + (  # pylint: disable=protected-access
            [rate] if isinstance(rate, keras.Variable) else [])
        legacy = self._legacy_variables() if self.built else []
        layouts = [(self.variables, False), (own + unbuilt_inner, False)]
        if legacy:
            layouts += [(legacy, True), (legacy[:len(own) + len(unbuilt_inner) - 1], True)]
        saved = [store[str(i)] for i in range(len(store.keys()))]
        for variables, is_legacy in layouts:
            if len(variables) == len(saved) and all(
                    tuple(v.shape) == tuple(np.shape(value))
                    and np.dtype(v.dtype) == np.dtype(value.dtype)
                    for v, value in zip(variables, saved)):
                break
        else:
            raise ValueError(
                f"The saved state of optimizer {self.name!r} holds {len(saved)} variables, "
                f"which match no layout of this optimizer ({len(self.variables)} variables, "
                f"built: {self.built}). Load it into a model compiled with the optimizer it "
                "was saved with (same Keras optimizer class and settings, e.g. use_ema), "
                "built on the same variables."
            )
        for variable, value in zip(variables, saved):
            variable.assign(value)
        self.reset_banded_noise()  # the restored trajectory is not the one its history noised
        if is_legacy:
            self._after_legacy_restore()
        if variables is not self.variables:
            # Keras loads the inner optimizer from its own entry next: that of an old file is
            # empty, that of an optimizer saved unbuilt lacks the slots. What there is was
            # loaded here.
            self._skip_next_inner_load()
        self._zero_retired_slots()
        for name, leaf, setting in self._state_mismatches():
            if not settings_agree(float(leaf), setting):
                raise ValueError(_state_mismatch_message(name, setting, float(leaf)))

    def _noised(self, clipped_sum, state):
        """The query's noised result, its randomness from this step's secret seed.

        The seed is the same on every replica (the key and its counter are mirrored).
        """
        query = self._dp_sum_query
        self._noised_coordinates = sum(
            int(g.shape.num_elements() or 0) for g in tf.nest.flatten(clipped_sum))
        if not hasattr(query, "get_noised_result_with_seed"):
            return query.get_noised_result(clipped_sum, state)  # a custom query's own noise
        with tf.control_dependencies(None):  # the seed needs no data: see noise_each_leaf
            ledger_step = self.iterations + self._dropped_steps
        seed = self._secret_key.step_seed(ledger_step)
        if isinstance(query, BandedMFSumQuery):
            return self._banded_noised(query, clipped_sum, state, seed, ledger_step)
        return query.get_noised_result_with_seed(clipped_sum, state, seed)

    def _banded_noised(self, query, clipped_sum, state, seed, ledger_step):
        """The clipped sum plus the strategy's correlated noise from this step's seed.

        z comes from the same per-step secret seed as the Gaussian query's noise; the
        recurrence restarts (zero history) whenever the ledger step is not the one it
        expects, i.e. after any restore, so no history from another trajectory is used.
        """
        leaves = tf.nest.flatten(clipped_sum)
        self._build_banded_noise([leaf.shape for leaf in leaves])
        noise = self._banded_noise
        if len(leaves) != len(noise._shapes) or any(  # pylint: disable=protected-access
                not leaf.shape.is_compatible_with(shape)
                for leaf, shape in zip(leaves, noise._shapes)):  # pylint: disable=protected-access
            raise ValueError(
                "The banded noise was built for other tensors than this step's gradients: "
                "build the optimizer on the variables it trains.")
        ledger_step = tf.cast(ledger_step, tf.int64)

        def restart():
            noise.reset()
            return tf.constant(True)

        restarted = tf.cond(tf.not_equal(ledger_step, self._banded_next_step), restart,
                            lambda: tf.constant(False))
        with tf.control_dependencies([restarted]):
            draws = noise.draw(seed, stddev=query.stddev)
        with tf.control_dependencies(draws):
            advanced = self._banded_next_step.assign(ledger_step + 1)
        with tf.control_dependencies([advanced]):
            draws = [tf.identity(d) for d in draws]
        return query.noised_with(clipped_sum, draws), state, None

    def _privatize(self, clipped_sum, num_units, batch_size, nonfinite_units):
        query = self._dp_sum_query
        state = self.query_global_state()
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            if self._gradient_canaries is not None:
                raise ValueError("Gradient canaries (the white-box audit) run on one "
                                 "replica only; audit outside the tf.distribute strategy.")
            if hasattr(query, "get_noised_result_with_seed"):
                # The global clipped sum first; then every replica noises it with the same
                # step seed (the key and its counter are mirrored): one noise draw, the
                # same on every replica, added to the whole sum (as the grid noise needs).
                global_sum = context.all_reduce(tf.distribute.ReduceOp.SUM, clipped_sum)
                noised_sum, new_state, _ = self._noised(global_sum, state)
            else:
                # A custom query's noise alone (added to zeros), kept on the first replica;
                # one all-reduce then gives the sum of clipped gradients + one noise draw.
                noise, new_state, _ = self._noised(
                    [tf.zeros_like(g) for g in clipped_sum], state)
                first = tf.equal(context.replica_id_in_sync_group, 0)
                local = [g + tf.where(first, n, tf.zeros_like(n))
                         for g, n in zip(clipped_sum, noise)]
                noised_sum = context.all_reduce(tf.distribute.ReduceOp.SUM, local)
            num_units, batch_size, nonfinite_units = context.all_reduce(
                tf.distribute.ReduceOp.SUM,
                [tf.cast(num_units, tf.int64), tf.cast(batch_size, tf.int64),
                 tf.cast(nonfinite_units, tf.int64)],
            )
        else:
            canaries = self._gradient_canaries
            if canaries is not None:
                # The canary block rides in the same query call: same noise, same coin.
                clip = query.derive_sample_params(state)
                clipped_sum = list(clipped_sum) + [canaries.sampled_block(clip)]
            # The returned event holds graph tensors when traced; `step_dp_event` gives the
            # step's event from the mechanism object instead.
            noised_sum, new_state, _ = self._noised(clipped_sum, state)
            if canaries is not None:
                with tf.control_dependencies([canaries.record(noised_sum[-1], clip)]):
                    noised_sum = [tf.identity(g) for g in noised_sum[:-1]]
        tf.nest.map_structure(
            lambda variable, value: variable.assign(value),
            self._query_state_variables,
            new_state,
        )
        if isinstance(query, RandomizedNoiseQuery):
            outcome = query.last_outcome(new_state)
        else:
            outcome = tf.constant(OUTCOME_NOISY, tf.int32)
        self._noisy_steps.assign_add(tf.cast(tf.equal(outcome, OUTCOME_NOISY), tf.int64))
        self._dropped_steps.assign_add(tf.cast(tf.equal(outcome, OUTCOME_DROPPED), tf.int64))
        nonfinite_units = tf.cast(nonfinite_units, tf.int64)
        skipped = nonfinite_units if self._on_nonfinite == "skip" else tf.zeros([], tf.int64)
        self._in_memory.record_step(batch_size, skipped)
        self._zero_retired_slots()
        checks = []
        if self._on_nonfinite != "skip":
            # After the counters: the step touched the data, so the ledger keeps it.
            checks.append(tf.debugging.assert_equal(
                nonfinite_units, tf.constant(0, tf.int64),
                message=(
                    "tfdp: non-finite (NaN or inf) loss or gradient for some examples of "
                    "this step; the update was not applied. The step touched the data, so "
                    "the privacy ledger (noisy_steps) counts it. Lower the learning rate or "
                    "check the data, or pass on_nonfinite='skip' to the optimizer: such "
                    "examples then contribute zero and the step keeps its DP guarantee."
                ),
            ))
        if self._expected_batch_size is not None:
            denominator = self._expected_batch_size
        else:
            denominator = num_units
        self._private_gradients_ready.flag = True
        with tf.control_dependencies(checks):  # no update can run before the check
            return [g / tf.cast(denominator, g.dtype) for g in tf.nest.flatten(noised_sum)]

    def private_gradients(self, loss, var_list, tape=None):
        """Clipped, summed and noised per-unit gradients of a per-example loss vector.

        `loss` is a [batch] tensor recorded on `tape` (or a callable returning
        it). Per-unit gradients come from the tape's Jacobian: exact for any
        model, and slow; `tfdp.make_private` is the fast path for Keras models.
        Advances the ledger like any private step.
        """
        var_list = list(tf.nest.flatten(var_list() if callable(var_list) else var_list))
        watched = [v.value if isinstance(v, keras.Variable) else v for v in var_list]
        if callable(loss):
            tape = tape if tape is not None else tf.GradientTape()
            with tape:
                tape.watch(watched)
                loss = loss()
        if tape is None:
            raise ValueError("`tape` is required when a `Tensor` loss is passed.")
        if not _hinted:  # once per process, at trace time
            _hinted.append(True)
            _logger.warning(_JACOBIAN_HINT)
        with tape:
            unit_losses, num_units, batch_size = per_unit_losses(
                loss, self._num_microbatches, seed=self.microbatch_seed())
        jacobians = tape.jacobian(
            unit_losses, watched, unconnected_gradients=tf.UnconnectedGradients.ZERO
        )
        return self.privatize_per_unit_gradients(jacobians, unit_losses, num_units, batch_size)

    def privatize_per_unit_gradients(self, per_unit_grads, unit_losses, num_units, batch_size):
        """Clips [units, ...] gradients with the query's bound, sums and noises them.

        The per-unit gradients are taken to come from a batched Jacobian, which does not
        isolate a non-finite example: on_nonfinite="skip" is refused here (ValueError).
        """
        if self._on_nonfinite == "skip":
            raise ValueError(SKIP_NEEDS_ISOLATION.format(
                where="the per-example Jacobian path (optimizer.minimize / "
                      "private_gradients, or make_private with num_microbatches, a query "
                      "without an L2/L1 clip, or use_fast_path=False)"))
        query = self._dp_sum_query
        params = query.derive_sample_params(self.query_global_state())
        finite = finite_units(per_unit_grads, unit_losses)
        clipped_sum = clip_and_sum(query, params, per_unit_grads)
        nonfinite = tf.reduce_sum(tf.cast(tf.logical_not(finite), tf.int64))
        return self.privatize_clipped_sum(clipped_sum, num_units, batch_size, nonfinite)

    def minimize(self, loss, var_list, tape=None):
        """One DP step in a custom loop: `private_gradients`, then `apply`."""
        var_list = list(tf.nest.flatten(var_list() if callable(var_list) else var_list))
        gradients = self.private_gradients(loss, var_list, tape=tape)
        self.apply(gradients, var_list)
        return self.iterations


    # ----- applying, or skipping a dropped step -----

    def apply(self, grads, trainable_variables=None):
        """Hands the private gradients to the inner optimizer; refuses any others.

        Gradients that did not pass `privatize_clipped_sum` (or `private_gradients`) in
        this step raise a ValueError and nothing is applied. A step the random schedule
        dropped (on_skip="drop") touches no model or optimizer variable.
        """
        if not getattr(self._private_gradients_ready, "flag", False):
            raise ValueError(_NOT_PRIVATE_MESSAGE.format(name=type(self).__name__))
        self._private_gradients_ready.flag = False
        grads = list(grads)
        if trainable_variables is None:
            if not self.built:
                raise ValueError("Pass the trainable variables to the first `apply`, or "
                                 "call `optimizer.build(trainable_variables)` first.")
            trainable_variables = self._trainable_variables
        trainable_variables = list(trainable_variables)
        if not self.built:
            # Slots are created here, not inside the conditional update of a dropped step
            # (under the inner optimizer's name, as when Keras builds the optimizer).
            self.build(trainable_variables)
        # As for the ledger: the counters' update must wait for the data.
        with tf.control_dependencies([g for g in grads if g is not None]):
            self._apply_private(grads, trainable_variables)

    def _apply_private(self, grads, trainable_variables):
        query = self._dp_sum_query
        if not (isinstance(query, RandomizedNoiseQuery) and query.on_skip == OnSkip.DROP):
            self._apply_inner(grads, trainable_variables)
            self._iterations.assign_add(1)
            return
        # The outcome is read from the replicated query state, the same on every replica.
        applied = self._step_applied()
        context = tf.distribute.get_replica_context()
        if tf.distribute.has_strategy() and context is not None:
            # Keras updates variables in a merge_call, which cannot run inside a tf.cond in a
            # replica context: decide in the cross-replica context, as Keras's
            # LossScaleOptimizer does for its skipped steps.
            def cross_replica(distribution, grads, trainable_variables):
                per_replica = distribution.extended.call_for_each_replica(self._step_applied)
                decided = distribution.experimental_local_results(per_replica)[0]

                def update():
                    distribution.extended.call_for_each_replica(
                        self._apply_inner, args=(grads, trainable_variables))
                    return tf.constant(True)

                tf.cond(decided, update, lambda: tf.constant(False))

            context.merge_call(cross_replica, args=(grads, trainable_variables))
        else:
            def update():
                self._apply_inner(grads, trainable_variables)
                return tf.constant(True)

            tf.cond(applied, update, lambda: tf.constant(False))
        self._iterations.assign_add(tf.cast(applied, self._iterations.dtype))

    def _apply_inner(self, grads, trainable_variables):
        """The inner optimizer's update with this step's private (global) gradients."""
        context = tf.distribute.get_replica_context()
        replicas = context.num_replicas_in_sync if context is not None else 1
        if replicas > 1:
            # Every replica holds the same global private gradient (privatize_clipped_sum
            # all-reduced it, with one noise draw); Keras's update sums the replicas'
            # gradients, so each hands over its share.
            grads = [None if g is None else g / tf.cast(replicas, g.dtype) for g in grads]
        self.inner_optimizer.apply(grads, trainable_variables)

    def step_released(self) -> Optional[tf.Tensor]:
        """After `privatize_clipped_sum`: a bool tensor, False when the random schedule
        dropped this step (on_skip="drop"), so nothing computed from its batch may be
        released (the train step then leaves its loss and metrics untouched). None when
        this optimizer never drops a step."""
        query = self._dp_sum_query
        if not (isinstance(query, RandomizedNoiseQuery) and query.on_skip == OnSkip.DROP):
            return None
        return self._step_applied()

    def _step_applied(self):
        outcome = self._dp_sum_query.last_outcome(self._query_state_variables)
        return tf.not_equal(tf.convert_to_tensor(outcome), OUTCOME_DROPPED)


    # ----- Keras serialization -----

    def _dp_config(self) -> Dict[str, Any]:
        if self._dp_arguments is not None:
            config = dict(self._dp_arguments)
        else:
            config = {"dp_sum_query": query_to_config(self._dp_sum_query)}
        config.update(
            num_microbatches=self._num_microbatches,
            expected_batch_size=self._expected_batch_size,
            on_nonfinite=self._on_nonfinite,
            insecure_reproducible_seed=self._insecure_seed,
            max_steps=self._max_steps,
        )
        return config

    def get_config(self) -> Dict[str, Any]:
        """The name, the serialized inner optimizer and every DP argument."""
        return {
            "name": self.name,
            "inner_optimizer": keras.saving.serialize_keras_object(self.inner_optimizer),
            **self._dp_config(),
        }

    @classmethod
    def from_config(cls, config: Dict[str, Any], custom_objects=None) -> "DPOptimizer":
        """Rebuilds the optimizer (and its inner optimizer) from `get_config`."""
        config = dict(config)
        inner = keras.saving.deserialize_keras_object(
            config.pop("inner_optimizer"), custom_objects=custom_objects)
        return cls(inner, **config)

    # ----- files and checkpoints of the DP subclasses this wrapper replaced -----

    def _trackable_children(self, save_type="checkpoint", **kwargs):
        # TensorFlow checkpoints name the wrapper's variable list "_dp_variables", not Keras's
        # "_variables": a checkpoint written before the wrapper holds the old subclass's
        # whole list there (ledger and slots by position), which must never be matched,
        # by position, onto this list (restore it with `restore_legacy_checkpoint`).
        children = super()._trackable_children(save_type, **kwargs)
        if "_variables" in children:
            children["_dp_variables"] = children.pop("_variables")
        return children

    def _legacy_variables(self) -> List[keras.Variable]:
        """The variables in the order of a pre-wrapper DP optimizer's saved list.

        Before, one subclass held everything: its step counter, its learning rate (a
        variable unless a schedule), the ledger, then the slots its `build` made. Here the
        step counter and the ledger are the wrapper's, the learning rate and the slots the
        inner optimizer's (which also has its own step counter, not in the old list).
        """
        inner = self.inner_optimizer
        rate = inner._learning_rate  # pylint: disable=protected-access
        rates = [rate] if isinstance(rate, keras.Variable) else []
        inner_rest = [v for v in inner.variables
                      if v is not inner._iterations and v is not rate]  # pylint: disable=protected-access
        return [self._iterations] + rates + self._variables[1:] + inner_rest

    def _after_legacy_restore(self) -> None:
        # The old step counter drove the update rule (Adam's bias correction) too.
        self.inner_optimizer._iterations.assign(self._iterations)  # pylint: disable=protected-access
        self._zero_retired_slots()

    def _skip_next_inner_load(self) -> None:
        """Skips Keras's next loading of the inner optimizer from its own file entry.

        `load_own_variables` already loaded what the file holds for it (an old file has no
        such entry; an optimizer saved before its first step has no slots there), so that
        load would only warn that the counts differ.
        """
        inner = self.inner_optimizer

        def load_own_variables(store):  # pylint: disable=unused-argument
            del inner.load_own_variables  # the class's method again

        inner.load_own_variables = load_own_variables

    def restore_legacy_checkpoint(self, checkpoint: str, key: str = "optimizer") -> None:
        """Restores this optimizer from a `tf.train.Checkpoint` written before the wrapper.

        `key` is the name the optimizer was checkpointed under. Such a checkpoint holds one
        DP optimizer object per Keras class (no `inner_optimizer`); its variables list is
        matched by position to `_legacy_variables`, as `load_own_variables` does for
        `.keras` files. Build the optimizer on the model's variables first (its slots must
        exist). Raises ValueError when the checkpoint does not match: then build the
        optimizer with the run's settings (same Keras optimizer class and arguments).
        """
        if not self.built:
            raise ValueError("Build the optimizer (optimizer.build(model.trainable_variables)) "
                             "before restoring a checkpoint into it.")
        legacy = self._legacy_variables()
        before = [v.numpy() for v in legacy]
        holder = tf.Module()
        holder._variables = [v.value for v in legacy]  # pylint: disable=protected-access
        try:
            status = tf.train.Checkpoint(**{key: holder}).restore(checkpoint).expect_partial()
            status.assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.InvalidArgumentError) as error:
            # Nothing half-restored stays: the optimizer is as it was.
            for variable, value in zip(legacy, before):
                variable.assign(value)
            raise ValueError(
                f"Checkpoint {checkpoint} does not hold the variables of this DP optimizer in "
                "the layout of tfdp before the DP optimizer became a wrapper: build the "
                "optimizer with the run's class and settings before restoring "
                f"({error}).") from error
        self._after_legacy_restore()
        for name, leaf, setting in self._state_mismatches():
            if not settings_agree(float(leaf), setting):
                raise ValueError(_state_mismatch_message(name, setting, float(leaf)))



for _setting in _INNER_SETTINGS:
    setattr(DPOptimizer, _setting, _InnerSetting(_setting))
del _setting


def make_dp_keras_optimizer_class(cls: Type[_Optimizer]) -> Type[DPOptimizer]:
    """Returns the DP optimizer class whose instances wrap a new `cls` optimizer.

    `DPKeras<Name>Optimizer(*, <DP arguments>, **cls_arguments)` is a `DPOptimizer` around
    `cls(**cls_arguments)`: the DP arguments go to the wrapper, the others (learning_rate,
    momentum, weight_decay, use_ema, ...) to the inner `cls` optimizer. Its config is flat
    (the inner optimizer's arguments beside the DP ones), as for the DP subclasses of
    Keras classes this factory made before, so their `.keras` files load into it. Each
    Keras class gets one DP class, registered for Keras serialization as
    "tfdp>DPKeras<Name>Optimizer". To wrap a configured instance (a schedule, AdamW, Lion,
    ...), use `tfdp.DPOptimizer(instance, ...)` directly.
    """
    if not (isinstance(cls, type) and issubclass(cls, _Optimizer)):
        raise ValueError(
            "make_dp_keras_optimizer_class needs a Keras 3 optimizer class (e.g. "
            f"keras.optimizers.SGD), got {cls!r}. tf-keras / keras.optimizers.legacy "
            "optimizers are not supported: use `import keras` (Keras 3)."
        )
    if issubclass(cls, DPOptimizer):
        raise ValueError(f"{cls.__name__} is already a DP optimizer class.")
    if cls in _DP_CLASSES:
        return _DP_CLASSES[cls]

    class DPKerasOptimizer(DPOptimizer):  # pylint: disable=missing-class-docstring
        __doc__ = f"""Differentially private {cls.__name__}: a `DPOptimizer` around a new
        `keras.optimizers.{cls.__name__}`.

        Each step: one gradient per example (or per microbatch), each clipped and
        summed by the sum query, noise added by it, divided by the number of units,
        then applied with {cls.__name__}'s update rule. Compile it into a
        `tfdp.make_private(model)`. `inner_optimizer` is the {cls.__name__} instance.

        Args:
          The DP arguments of `tfdp.DPOptimizer` (dp_sum_query, mechanism,
            noise_schedule, noise_probability, on_skip, l2_norm_clip, l1_norm_clip,
            noise_multiplier, num_microbatches, expected_batch_size, seed,
            floating_point_safe_noise, insecure_reproducible_seed, on_nonfinite,
            max_steps), by keyword, and `name`.
          **kwargs: {cls.__name__}'s own arguments (learning_rate, ...).
        """

        keras_optimizer_class = cls

        def __init__(self, *, name: Optional[str] = None, **kwargs: Any):
            dp_kwargs = {k: kwargs.pop(k) for k in _DP_ARGUMENTS + _OTHER_DP_ARGUMENTS
                         if k in kwargs}
            super().__init__(cls(**kwargs), name=name, **dp_kwargs)

        def get_config(self) -> Dict[str, Any]:
            """The inner optimizer's arguments, the name and every DP argument (flat)."""
            config = self.inner_optimizer.get_config()
            config["name"] = self.name
            config.update(self._dp_config())
            return config

        @classmethod
        def from_config(cls_, config: Dict[str, Any], custom_objects=None):  # noqa: N804
            """Rebuilds the optimizer from its flat config (a schedule deserialized)."""
            return _Optimizer.from_config.__func__(cls_, config, custom_objects=custom_objects)

    DPKerasOptimizer.__name__ = f"DPKeras{cls.__name__}Optimizer"
    DPKerasOptimizer.__qualname__ = DPKerasOptimizer.__name__
    # One class per Keras class, registered, so that `.keras` files of any of them load.
    _DP_CLASSES[cls] = keras.saving.register_keras_serializable(
        package="tfdp", name=DPKerasOptimizer.__name__)(DPKerasOptimizer)
    return DPKerasOptimizer

def _state_mismatch_message(name: str, setting: float, state_value: Optional[float] = None) -> str:
    # No apostrophes: a graph assertion would print them escaped.
    held = "another value" if state_value is None else f"{state_value:g}"
    return (
        f"tfdp: the query state of the DP optimizer holds {name} = {held}, but the optimizer "
        f"was built with {name} = {setting:g}, the value that clips, noises and is accounted "
        "for. The state was restored from a checkpoint or file saved with other settings: "
        "build the optimizer with the settings of that checkpoint (clip, noise_multiplier, "
        "mechanism) before restoring it. Nothing was applied."
    )


def _with_seeded_noise(query: dp_query.SumAggregationDPQuery) -> dp_query.SumAggregationDPQuery:
    """`query`, rebuilt as tfdp's equivalent when it would draw from TF's global RNG.

    TF Privacy's own GaussianSumQuery draws its noise from TensorFlow's global RNG, which
    `keras.utils.set_random_seed` replays; tfdp's subclass draws the same distribution
    from the optimizer's secret key. A query tfdp cannot rebuild is kept as it is (its
    randomness is its own; the accountant gives it no formal guarantee).
    """
    if _draws_from_seed(query):
        return query
    try:
        return query_from_config(query_to_config(query))
    except ValueError:
        return query


def _draws_from_seed(query) -> bool:
    if isinstance(query, RandomizedNoiseQuery):
        return _draws_from_seed(query.inner_query)
    return hasattr(query, "get_noised_result_with_seed")


DPKerasSGDOptimizer = make_dp_keras_optimizer_class(keras.optimizers.SGD)
DPKerasAdamOptimizer = make_dp_keras_optimizer_class(keras.optimizers.Adam)
DPKerasAdagradOptimizer = make_dp_keras_optimizer_class(keras.optimizers.Adagrad)
