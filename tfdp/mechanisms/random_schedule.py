"""The random noise schedule (RanN-DP-SGD) as a wrapper of any registered noise mechanism."""

from __future__ import annotations

from typing import Any, Dict, Optional

from tfdp._tf_privacy import dp_query
from tfdp.names import NoiseSchedule, OnSkip
from tfdp.queries.randomized_noise_query import RandomizedNoiseQuery


class RandomSchedule:
    """Noise on a step only when a Bernoulli(p) coin comes up 1; wraps the mechanism's query.

    Owns what the schedule adds to a mechanism: the wrapping query
    (`RandomizedNoiseQuery`), reading its settings back, and its config round
    trip. Accounting for the schedule (which steps count) is in
    `tfdp.accounting.counting`; its statement in `tfdp.accounting.statement`.
    """

    name = NoiseSchedule.RANDOM
    query_class = RandomizedNoiseQuery

    def wrap(
        self,
        query: dp_query.SumAggregationDPQuery,
        noise_probability: float,
        on_skip: str = OnSkip.RELEASE,
        seed: Optional[int] = None,
    ) -> RandomizedNoiseQuery:
        """`query` with the coin: noisy with probability `noise_probability`."""
        return RandomizedNoiseQuery(query, noise_probability, on_skip=str(on_skip), seed=seed)

    def owns_query(self, query: Any) -> bool:
        """True for a RandomizedNoiseQuery."""
        return isinstance(query, self.query_class)

    def settings(self, query: RandomizedNoiseQuery) -> Dict[str, Any]:
        """The schedule's part of a query description."""
        return {
            "noise_schedule": str(self.name),
            "noise_probability": query.noise_probability,
            "on_skip": query.on_skip,
        }

    def query_to_config(self, query: RandomizedNoiseQuery, inner_config: Dict[str, Any]):
        """Constructor arguments, the inner query given as its serialized config."""
        return {
            "inner_query": inner_config,
            "noise_probability": query.noise_probability,
            "on_skip": query.on_skip,
        }


RANDOM_SCHEDULE = RandomSchedule()
