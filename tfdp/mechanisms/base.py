"""`NoiseMechanism`: everything tfdp knows about one DP-SGD noise mechanism, in one object.

A mechanism owns its name, how it clips a unit's gradient, the sum query that adds
its noise, that query's config round trip, the `dp_event` of a step, which
accountants can read that event, and the words the privacy statement uses for it.
Queries, optimizers, the fast path, accounting and the run look a mechanism up by
name (`get_mechanism`) or by query (`mechanism_of_query`) instead of branching on
names, so a new mechanism is its own module plus one `register_mechanism` call.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar, Dict, Optional, Tuple

import dp_accounting

from tfdp._tf_privacy import dp_query


class NoiseMechanism(abc.ABC):
    """One noise mechanism: clipping, noise, config round trip, events, accountant, statement.

    Subclasses set the class attributes and implement the abstract methods; the
    instance registered with `register_mechanism` is shared (it holds no run state).
    Settings of a run (clip, noise multiplier) are passed in, never stored.

    Class attributes:
      name: the name users pass (`mechanism="gaussian"`).
      title: the name in text ("Gaussian").
      clip_kind: "l2" or "l1": the norm each unit's gradient is clipped to.
      clip_argument: the keyword that carries the clip ("l2_norm_clip").
      noise_multiplier_meaning: what the multiplier is a ratio of, for the statement.
      accountants: the dp_accounting accountants that can read this mechanism's
        events, the default first.
      query_class: the sum query class this mechanism builds.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    clip_kind: ClassVar[str]
    clip_argument: ClassVar[str]
    noise_multiplier_meaning: ClassVar[str]
    accountants: ClassVar[Tuple[str, ...]]
    query_class: ClassVar[type]

    # ----- the query -----

    @abc.abstractmethod
    def make_query(self, clip: float, noise_multiplier: float, floating_point_safe: bool = False
                   ) -> dp_query.SumAggregationDPQuery:
        """The sum query that clips each record to `clip` and adds this mechanism's noise.

        `floating_point_safe`: noise on a grid (`tfdp.randomness.grid`), same accounting.
        """

    @abc.abstractmethod
    def read_query(self, query: dp_query.SumAggregationDPQuery) -> Tuple[float, float]:
        """(clip, noise_multiplier) of a query of `query_class`, read through public APIs."""

    def owns_query(self, query: Any) -> bool:
        """True when `query` is this mechanism's query (subclasses included)."""
        return isinstance(query, self.query_class)

    def query_settings(self, query: dp_query.SumAggregationDPQuery) -> Dict[str, Any]:
        """Settings of `query` beyond clip and multiplier that accounting needs (e.g. bands)."""
        del query
        return {}

    def query_to_config(self, query: dp_query.SumAggregationDPQuery) -> Dict[str, Any]:
        """The constructor arguments of `query`, for `query_from_config`."""
        clip, noise_multiplier = self.read_query(query)
        return {self.clip_argument: clip, "noise_multiplier": noise_multiplier,
                "floating_point_safe": bool(getattr(query, "floating_point_safe", False))}

    def query_from_config(self, config: Dict[str, Any]) -> dp_query.SumAggregationDPQuery:
        """Rebuilds a query from `query_to_config`'s output."""
        if config.get("floating_point_safe"):
            return self.make_query(config[self.clip_argument], config["noise_multiplier"], True)
        return self.make_query(config[self.clip_argument], config["noise_multiplier"])

    # ----- accounting -----

    @abc.abstractmethod
    def step_event(self, noise_multiplier: float) -> dp_accounting.DpEvent:
        """The event of one noisy release of a unit of sensitivity `clip` (no sampling)."""

    def dp_event(
        self, noise_multiplier: float, sampling_probability: Optional[float] = None, count: int = 1
    ) -> dp_accounting.DpEvent:
        """`count` noisy steps, each Poisson-subsampled with `sampling_probability` if given."""
        if count == 0:
            return dp_accounting.NoOpDpEvent()
        event = self.step_event(noise_multiplier)
        if sampling_probability is not None:
            event = dp_accounting.PoissonSampledDpEvent(sampling_probability, event)
        return event if count == 1 else dp_accounting.SelfComposedDpEvent(event, count)

    @property
    def default_accountant(self) -> str:
        """The accountant used when none is asked for."""
        return self.accountants[0]

    def check_accountant(self, accountant: Optional[str]) -> str:
        """The accountant to use; raises ValueError when this mechanism's events need another."""
        if accountant is None:
            return self.default_accountant
        if accountant not in self.accountants:
            raise ValueError(self.accountant_refusal(accountant))
        return accountant

    def accountant_refusal(self, accountant: str) -> str:
        """Why `accountant` cannot account for this mechanism, and what to pass instead."""
        return (f"accountant={accountant!r} cannot account for the {self.title} mechanism; use "
                f"one of {self.accountants} or None.")

    # ----- words -----

    def statement(self, noise_multiplier: float, accountant: str, halved: str = "") -> str:
        """The statement's sentence on the noise; `halved` explains a microbatching correction."""
        return (f"Mechanism: {self.title} noise, noise multiplier {noise_multiplier:g} "
                f"({self.noise_multiplier_meaning}){halved}. {accountant.upper()} accounting.")
