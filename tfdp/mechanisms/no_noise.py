"""Training without noise (No-DP): the "none" mechanism, which has no guarantee."""

from __future__ import annotations

from typing import Any

from tfdp._tf_privacy import no_privacy_query
from tfdp.names import NO_NOISE


class NoNoise:
    """TF Privacy's NoPrivacySumQuery: sums without clipping or noise; epsilon is infinite."""

    name = NO_NOISE
    query_class = no_privacy_query.NoPrivacySumQuery

    def owns_query(self, query: Any) -> bool:
        """True for a NoPrivacySumQuery."""
        return isinstance(query, self.query_class)

    def make_query(self) -> no_privacy_query.NoPrivacySumQuery:
        """A fresh NoPrivacySumQuery."""
        return no_privacy_query.NoPrivacySumQuery()


NO_NOISE_MECHANISM = NoNoise()
