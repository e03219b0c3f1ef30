"""The open registry of layer rules: layer class -> rule, most specific class first."""

from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple, Type, Union

import keras

from tfdp.training.rules.base import LayerRule

_RULES: Dict[type, LayerRule] = {}


def register_layer_rule(layer_class: Type[keras.layers.Layer],
                        rule: Union[LayerRule, Type[LayerRule]]) -> LayerRule:
    """Makes `make_private` use `rule` for `layer_class` and its subclasses.

    `rule` is a `tfdp.training.LayerRule` (an instance, or a class taking no arguments).
    A later registration for the same class replaces the earlier one, so a user can
    also override a built-in rule. Subclasses that override `call` are not covered
    unless the rule's `supports` says so. Returns the registered rule.
    """
    if not (isinstance(layer_class, type) and issubclass(layer_class, keras.layers.Layer)):
        raise TypeError(f"register_layer_rule needs a keras.layers.Layer subclass, got "
                        f"{layer_class!r}.")
    if isinstance(rule, type):
        rule = rule()
    if not isinstance(rule, LayerRule):
        raise TypeError(f"register_layer_rule needs a tfdp.training.LayerRule, got "
                        f"{type(rule).__name__}: subclass LayerRule and implement forward, "
                        "norms and weighted_sums.")
    if layer_class not in rule.layer_types:
        rule.layer_types = tuple(rule.layer_types) + (layer_class,)
    _RULES[layer_class] = rule
    return rule


def unregister_layer_rule(layer_class: type) -> None:
    """Removes the rule registered for exactly `layer_class` (its layers take the fallback)."""
    rule = _RULES.pop(layer_class, None)
    if rule is not None:
        rule.layer_types = tuple(t for t in rule.layer_types if t is not layer_class)


def layer_rule(*layer_classes: type) -> Callable[[Type[LayerRule]], Type[LayerRule]]:
    """Class decorator: registers one instance of the rule for every class given."""

    def register(rule_class: Type[LayerRule]) -> Type[LayerRule]:
        rule = rule_class()
        for layer_class in layer_classes:
            register_layer_rule(layer_class, rule)
        return rule_class

    return register


def rule_for(layer: keras.layers.Layer) -> Optional[LayerRule]:
    """The rule of the most specific registered class of `layer` (or that rule's variant for
    the layer, such as its LoRA form), if it supports the layer."""
    for cls in type(layer).__mro__:
        rule = _RULES.get(cls)
        if rule is not None:
            rule = rule.variant(layer)
            return rule if rule.supports(layer) else None
    return None


def registered_rules() -> Dict[type, LayerRule]:
    """A copy of the registry: layer class -> rule."""
    return dict(_RULES)


def rule_names() -> Tuple[str, ...]:
    """The registered layer classes' names, sorted (for documentation and errors)."""
    return tuple(sorted(cls.__name__ for cls in _RULES))
