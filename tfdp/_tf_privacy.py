"""The one place where tfdp imports TensorFlow Privacy.

tensorflow-privacy 0.8.12's package ``__init__`` imports its estimator-based optimizers, which fail
on TensorFlow >= 2.16 (``tensorflow_estimator`` is gone). Its own switch
``sys.skip_tf_privacy_import`` skips those imports; the submodules tfdp uses (the ``DPQuery``
protocol, the membership-inference attack library with ``advanced_mia``, and the epsilon lower
bound) import and run without them. Every tfdp module takes TF Privacy from here, so the switch is
applied exactly once, before the first import.
"""

import sys

if "tensorflow_privacy" not in sys.modules:
    sys.skip_tf_privacy_import = True

from tensorflow_privacy.privacy.dp_query import (  # noqa: E402
    dp_query,
    gaussian_query,
    no_privacy_query,
)
from tensorflow_privacy.privacy.privacy_tests import epsilon_lower_bound  # noqa: E402
from tensorflow_privacy.privacy.privacy_tests.membership_inference_attack import (  # noqa: E402
    advanced_mia,
    data_structures as mia_data_structures,
    membership_inference_attack as mia,
)

__all__ = [
    "dp_query",
    "gaussian_query",
    "no_privacy_query",
    "epsilon_lower_bound",
    "advanced_mia",
    "mia",
    "mia_data_structures",
]
