"""Per-example gradient rules, one module per layer type, in an open registry.

Importing this package registers the built-in rules. A user adds one for a custom
layer with `tfdp.training.register_layer_rule(layer_class, rule)`.
"""

from tfdp.training.rules.base import Call, LayerRule, PerExampleGradientRule, var_key
from tfdp.training.rules.registry import (layer_rule, register_layer_rule, registered_rules,
                                          rule_for, rule_names, unregister_layer_rule)

# The built-in rules register themselves on import.
from tfdp.training.rules import (conv, conv_transpose, dense, depthwise_conv,  # noqa: F401,E402
                                 einsum_dense, embedding, group_normalization,
                                 layer_normalization, layer_scale, prelu, recurrent,
                                 separable_conv)
from tfdp.training.rules import batch_normalization  # noqa: F401,E402

__all__ = ["Call", "LayerRule", "PerExampleGradientRule", "var_key", "layer_rule",
           "register_layer_rule", "registered_rules", "rule_for", "rule_names",
           "unregister_layer_rule"]
