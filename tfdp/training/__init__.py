"""The fast per-example-gradient training path: `make_private(model)`."""

from tfdp.training.layer_rules import RULES, LayerRule, rule_for
from tfdp.training.private_model import PrivateModel, check_dp_compatible, make_private

__all__ = ["make_private", "PrivateModel", "check_dp_compatible", "LayerRule", "RULES", "rule_for"]
