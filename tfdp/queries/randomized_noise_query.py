"""Randomized noise schedule (RanN-DP-SGD): noise only on steps where a coin comes up 1."""

from __future__ import annotations

import collections
from typing import Any, Dict, List, Optional, Tuple

import dp_accounting
import tensorflow as tf
from tfdp._tf_privacy import dp_query

from tfdp._validation import check_choice, check_probability
from tfdp.names import OnSkip, values
from tfdp.queries.seeded import SeededNoiseQuery
from tfdp.randomness import split_seeds, warn_seed_ignored

ON_SKIP_CHOICES = values(OnSkip)

# What a step did, as stored in the global state's `last_outcome`.
OUTCOME_NOISY = 0  # coin = 1: the inner query's noised result
OUTCOME_RELEASED = 1  # coin = 0, on_skip="release": the exact clipped sum, no noise
OUTCOME_DROPPED = 2  # coin = 0, on_skip="drop": nothing released, no update


class RandomizedNoiseQuery(SeededNoiseQuery, dp_query.SumAggregationDPQuery):
    """Wraps a sum query so that noise is added only when a Bernoulli(p) coin is 1.

    At every `get_noised_result` a coin d ~ Bernoulli(`noise_probability`) is drawn.
    d = 1 returns the inner query's noised sum and its event. d = 0 depends on
    `on_skip`:

    * ``"release"`` (the dynamic-DP paper's RanN-DP-SGD): the clipped sum is
      returned *without noise*. That step is not differentially private
      (`dp_accounting.NonPrivateDpEvent`), so with p < 1 the formal epsilon of the
      training run is infinite.
    * ``"drop"``: nothing is released and no update should be made (the result is
      all zeros and `last_outcome` says DROPPED); the event is
      `dp_accounting.NoOpDpEvent`, so privacy composes over the noisy steps only.

    The coin and the inner query's noise come from the step's seed
    (`get_noised_result_with_seed`: the DP optimizer passes one from its secret key, the
    same on every replica; `get_noised_result` draws one from the OS's entropy), so no
    seed, checkpoint or export replays the schedule. The global state counts noisy,
    released-noiseless and dropped steps. Its `seed` field is retired (always zero): it
    keeps the layout of files saved when the coin's seed lived there.

    Inside `tf.function` the coin is a tensor, so the returned event cannot be
    the realized one; it is then the conservative bound over both outcomes (the
    inner event for ``"drop"``, `NonPrivateDpEvent` for ``"release"`` with
    p < 1). Use the counters in the global state for the realized ledger.
    """

    _GlobalState = collections.namedtuple(
        "_GlobalState",
        ["inner_state", "seed", "noisy_count", "released_count", "dropped_count", "last_outcome"],
    )

    def __init__(
        self,
        inner_query: dp_query.SumAggregationDPQuery,
        noise_probability: float,
        on_skip: str = "release",
        seed: Optional[int] = None,
    ):
        if not isinstance(inner_query, dp_query.SumAggregationDPQuery):
            raise ValueError(
                "`inner_query` must be a sum query (a tensorflow_privacy SumAggregationDPQuery "
                "such as GaussianSumQuery or tfdp.queries.LaplaceSumQuery), "
                f"got {type(inner_query).__name__}."
            )
        self._inner_query = inner_query
        self._noise_probability = check_probability("noise_probability", noise_probability)
        self._on_skip = check_choice("on_skip", on_skip, ON_SKIP_CHOICES)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"`seed` must be an integer or None, got {seed!r}.")
        if seed is not None:
            warn_seed_ignored("RandomizedNoiseQuery", "the random schedule's coin")

    @property
    def inner_query(self) -> dp_query.SumAggregationDPQuery:
        """The wrapped query that adds the noise."""
        return self._inner_query

    @property
    def noise_probability(self) -> float:
        """Probability p that a step is noisy."""
        return self._noise_probability

    @property
    def seed(self) -> None:
        """Always None: the coin comes from each step's secret seed (kept for compatibility)."""
        return None

    @property
    def on_skip(self) -> str:
        """What a noiseless step does: "release" or "drop"."""
        return self._on_skip

    def initial_global_state(self):
        """Implements `DPQuery.initial_global_state`."""
        zero = tf.constant(0, tf.int64)
        return self._GlobalState(
            inner_state=self._inner_query.initial_global_state(),
            seed=tf.zeros([2], tf.int64),  # retired; see the class docstring
            noisy_count=zero,
            released_count=zero,
            dropped_count=zero,
            last_outcome=tf.constant(OUTCOME_NOISY, tf.int32),
        )

    def state_settings(self, global_state) -> List[Tuple[str, tf.Tensor, float]]:
        """The inner query's settings in the inner state (the schedule's are Python-only)."""
        inner = self._inner_query
        if not hasattr(inner, "state_settings"):
            return []
        return inner.state_settings(global_state.inner_state)

    def derive_sample_params(self, global_state):
        """Implements `DPQuery.derive_sample_params` by delegating to the inner query."""
        return self._inner_query.derive_sample_params(global_state.inner_state)

    def preprocess_record(self, params, record):
        """Implements `DPQuery.preprocess_record` by delegating (clipping) to the inner query."""
        return self._inner_query.preprocess_record(params, record)

    def draw_coin(self, seed: tf.Tensor) -> tf.Tensor:
        """The step's coin, a bool tensor: True (noisy) with probability `noise_probability`."""
        uniform = tf.random.stateless_uniform([], seed=seed, dtype=tf.float32)
        return uniform < self._noise_probability

    def get_noised_result_with_seed(self, sample_state, global_state, seed):
        """`get_noised_result` with the coin and the noise drawn from `seed`."""
        with tf.control_dependencies(None):  # the draws need no data (noise_each_leaf)
            coin_seed, noise_seed = tf.unstack(split_seeds(seed, 2))
            noisy = self.draw_coin(coin_seed)
        inner = self._inner_query
        if hasattr(inner, "get_noised_result_with_seed"):
            noised, next_inner_state, inner_event = inner.get_noised_result_with_seed(
                sample_state, global_state.inner_state, noise_seed)
        else:  # a foreign inner query draws its own noise
            noised, next_inner_state, inner_event = inner.get_noised_result(
                sample_state, global_state.inner_state)
        if self._on_skip == OnSkip.RELEASE:
            skipped_result = sample_state
            skipped_outcome = OUTCOME_RELEASED
        else:
            skipped_result = tf.nest.map_structure(tf.zeros_like, sample_state)
            skipped_outcome = OUTCOME_DROPPED
        result = tf.nest.map_structure(
            lambda a, b: tf.where(noisy, a, b), noised, skipped_result
        )
        # The inner state only moves on a noisy step: a skipped step must not adapt anything.
        inner_state = tf.nest.map_structure(
            lambda a, b: tf.where(noisy, a, b), next_inner_state, global_state.inner_state
        )
        outcome = tf.where(noisy, OUTCOME_NOISY, skipped_outcome)
        one = tf.constant(1, tf.int64)
        zero = tf.constant(0, tf.int64)
        skip_released = tf.logical_and(tf.logical_not(noisy), skipped_outcome == OUTCOME_RELEASED)
        skip_dropped = tf.logical_and(tf.logical_not(noisy), skipped_outcome == OUTCOME_DROPPED)
        new_state = self._GlobalState(
            inner_state=inner_state,
            seed=global_state.seed,
            noisy_count=global_state.noisy_count + tf.where(noisy, one, zero),
            released_count=global_state.released_count + tf.where(skip_released, one, zero),
            dropped_count=global_state.dropped_count + tf.where(skip_dropped, one, zero),
            last_outcome=tf.cast(outcome, tf.int32),
        )
        return result, new_state, self._event(noisy, inner_event)

    def _event(self, noisy, inner_event) -> dp_accounting.DpEvent:
        """The realized event when the coin is known (eager), else a conservative bound."""
        skipped_event = (
            dp_accounting.NonPrivateDpEvent()
            if self._on_skip == OnSkip.RELEASE
            else dp_accounting.NoOpDpEvent()
        )
        if tf.executing_eagerly():
            return inner_event if bool(noisy) else skipped_event
        if self._noise_probability >= 1.0:
            return inner_event
        if self._on_skip == OnSkip.RELEASE:
            return dp_accounting.NonPrivateDpEvent()
        return inner_event

    @staticmethod
    def last_outcome(global_state) -> tf.Tensor:
        """What the last step did: OUTCOME_NOISY, OUTCOME_RELEASED or OUTCOME_DROPPED."""
        return global_state.last_outcome

    def get_config(self) -> Dict[str, Any]:
        """Returns the constructor arguments, the inner query as {"class_name", "config"}.

        The inner query must have a `get_config` (tfdp's Gaussian and Laplace queries
        do); `tfdp.mechanisms.query_to_config` serializes any query tfdp knows.
        """
        inner = self._inner_query
        if not hasattr(inner, "get_config"):
            raise ValueError(
                f"The inner {type(inner).__name__} has no get_config; serialize the query with "
                "tfdp.mechanisms.query_to_config instead.")
        return {
            "inner_query": {"class_name": type(inner).__name__, "config": inner.get_config()},
            "noise_probability": self._noise_probability,
            "on_skip": self._on_skip,
        }
