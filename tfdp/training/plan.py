"""Which exact path computes each variable's per-example gradient: a rule, the local fallback, or the Jacobian.

Before the first private step for an input signature, `make_plan` traces the model's
forward pass once, with every layer's call wrapped to note the span of graph operations
it created. Every read of a trainable variable (an operation consuming its handle) is
then attributed to the innermost layer whose calls contain all of that variable's
reads. That layer computes the variable's per-example gradient:

- **rule**: the layer has a registered rule that handled every call and lists the
  variable: per-example quantities from the layer's input and output gradient;
- **local**: any other layer whose calls all ran in the step's main graph with
  batch-major tensor arguments: a vectorized per-example vector-Jacobian product of
  that one layer (`tfdp.training.local_gradients`);
- **jacobian**: otherwise (a variable read by two layers that do not nest, such as an
  embedding matrix tied to an output projection; a layer called only inside a loop
  or a condition of another layer that is not itself local-capable): the whole
  model's per-example Jacobian for that variable.

A rule layer whose variable is also read outside its calls (weight tying) loses its
rule: the variable's per-example gradient must be the sum of both uses, which only a
path covering both computes. Nothing is ever approximated.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import keras
import tensorflow as tf

from tfdp.training.local_gradients import batch_major_leaves
from tfdp.training.rules import LayerRule, rule_for, var_key

RULE, LOCAL, JACOBIAN = "rule", "local", "jacobian"


def model_layers(model: keras.Model) -> List[keras.layers.Layer]:
    """Every layer inside `model`, nested ones included (not the model itself)."""
    return [m for m in model._flatten_layers(include_self=False)  # pylint: disable=protected-access
            if isinstance(m, keras.layers.Layer)]


@dataclasses.dataclass
class GradientPlan:
    """The path of every trainable variable's per-example gradient, for one input signature.

    rules: (layer, rule) pairs whose rule computes the layer's variables;
    local: (layer, variables) pairs computed by the layer's own per-example VJP;
    jacobian: variables that take the whole model's per-example Jacobian;
    unused: variables the forward pass never reads (their gradient is zero).
    """

    rules: List[Tuple[keras.layers.Layer, LayerRule]]
    local: List[Tuple[keras.layers.Layer, List[Any]]]
    jacobian: List[Any]
    unused: List[Any]
    reasons: Dict[str, str] = dataclasses.field(default_factory=dict)
    order: List[str] = dataclasses.field(default_factory=list)

    def describe(self) -> Dict[str, str]:
        """{layer name: "rule:<RuleClass>" | "local" | "jacobian"}, layers with weights in call order."""
        out = {layer.name: f"{RULE}:{type(rule).__name__}" for layer, rule in self.rules}
        out.update({layer.name: LOCAL for layer, _ in self.local})
        for variable in self.jacobian:
            out[_owner_name(variable)] = JACOBIAN
        rank = {name: i for i, name in enumerate(self.order)}
        return dict(sorted(out.items(), key=lambda item: rank.get(item[0], len(rank))))

    def summary(self) -> str:
        """One line per path: which layers took it (and why for the Jacobian)."""
        described = self.describe()
        lines = []
        for path in (RULE, LOCAL, JACOBIAN):
            names = [n for n, p in described.items() if p.split(":")[0] == path]
            if names:
                lines.append(f"{path}: {', '.join(names)}")
        lines.extend(f"  {name}: {why}" for name, why in self.reasons.items())
        return "\n".join(lines)


def _owner_name(variable) -> str:
    path = getattr(variable, "path", None) or variable.name
    parts = path.split("/")
    return parts[-2] if len(parts) > 1 else path


class _Probe:
    """What the probe trace records: each layer's call spans, and whether it was capturable."""

    def __init__(self) -> None:
        self.spans: Dict[int, List[Tuple[int, int]]] = {}
        self.nested: Dict[int, bool] = {}  # a call ran in another graph (a loop or condition body)
        self.declined: Dict[int, bool] = {}  # the rule's forward returned None for some call
        self.unsliceable: Dict[int, bool] = {}  # some call had no batch-major tensor argument


@contextlib.contextmanager
def _patched(layers: Sequence[keras.layers.Layer], make_call: Callable):
    """Replaces each layer's `call` by `make_call(layer, original)` while active."""
    patched = []
    try:
        for layer in layers:
            original = layer.call
            layer.call = make_call(layer, original)
            patched.append(layer)
        yield
    finally:
        for layer in patched:
            del layer.call


def _usable_rule(layer) -> Optional[LayerRule]:
    rule = rule_for(layer)
    if rule is None or not layer.trainable or not rule.variables(layer):
        return None
    return rule


def _probe_graph(model: keras.Model, spec) -> Tuple[tf.Graph, _Probe]:
    probe = _Probe()
    layers = model_layers(model)
    state = threading.local()

    def make_call(layer, original):
        rule = _usable_rule(layer)
        key = id(layer)

        def call(inputs, *args, **kwargs):
            graph = tf.compat.v1.get_default_graph()
            if graph is not state.graph:
                probe.nested[key] = True
                return original(inputs, *args, **kwargs)
            start = len(graph.get_operations())
            leaves = tf.nest.flatten((inputs, args, kwargs))
            if not batch_major_leaves(leaves):
                probe.unsliceable[key] = True
            captured = rule.forward(layer, inputs, *args, **kwargs) if rule is not None else None
            if rule is not None and captured is None:
                probe.declined[key] = True
            output = original(inputs, *args, **kwargs) if captured is None else captured[0]
            probe.spans.setdefault(key, []).append((start, len(graph.get_operations())))
            return output

        return call

    def forward(x):
        state.graph = tf.compat.v1.get_default_graph()
        return model(x, training=True)

    with tf.init_scope(), _patched(layers, make_call):
        graph = tf.function(forward, autograph=False).get_concrete_function(spec).graph
    return graph, probe


def _reads(graph: tf.Graph, variables: Sequence[Any]) -> Dict[int, List[int]]:
    """{var_key: indices of the graph's operations that consume the variable's handle}."""
    handles = {id(v.value.handle if isinstance(v, keras.Variable) else v.handle): var_key(v)
               for v in variables}
    placeholders = {internal.ref(): handles[id(external)]
                    for external, internal in graph.captures if id(external) in handles}
    reads: Dict[int, List[int]] = {var_key(v): [] for v in variables}
    for index, op in enumerate(graph.get_operations()):
        for t in op.inputs:
            key = placeholders.get(t.ref())
            if key is not None:
                reads[key].append(index)
    return reads


def _spec(x) -> Any:
    """The input's TensorSpec with a dynamic batch axis (as Keras traces the train step)."""
    def one(t):
        t = tf.convert_to_tensor(t) if not isinstance(t, (tf.Tensor, tf.TensorSpec)) else t
        shape = t.shape
        return tf.TensorSpec([None] + list(shape[1:]), t.dtype)
    return tf.nest.map_structure(one, x)


def make_plan(model: keras.Model, x: Any) -> GradientPlan:
    """Traces `model` once on `x`'s signature and decides each variable's exact path."""
    variables = list(model.trainable_variables)
    graph, probe = _probe_graph(model, _spec(x))
    reads = _reads(graph, variables)
    layers = sorted((layer for layer in model_layers(model) if id(layer) in probe.spans),
                    key=lambda layer: probe.spans[id(layer)][0][0])
    rules = {id(layer): _usable_rule(layer) for layer in layers}
    position = {id(layer): i for i, layer in enumerate(layers)}
    reasons: Dict[str, str] = {}

    def covers(layer, indices) -> bool:
        spans = probe.spans[id(layer)]
        return all(any(start <= i < end for start, end in spans) for i in indices)

    def span(layer) -> int:
        return sum(end - start for start, end in probe.spans[id(layer)])

    def local_capable(layer) -> bool:
        key = id(layer)
        return not probe.nested.get(key) and not probe.unsliceable.get(key)

    demoted = set()
    while True:
        claims: Dict[int, int] = {}  # var_key -> id(layer) that claims it
        claim_path: Dict[int, str] = {}
        for v in variables:
            key = var_key(v)
            indices = reads[key]
            if not indices:
                continue
            # Innermost first; a wrapper whose call is only its inner layer's call spans the
            # same operations, and the inner layer (later in `layers`) is the innermost.
            containing = sorted((layer for layer in layers if covers(layer, indices)),
                                key=lambda layer: (span(layer), -position[id(layer)]))
            for layer in containing:
                lid = id(layer)
                # A call on no batch-major tensor (an Embedding of fixed position ids, a
                # Dense on a constant) feeds every example at once: its output gradient is the
                # batch's sum, so no rule can split it; the enclosing layer re-runs it per example.
                rule = (None if lid in demoted or probe.declined.get(lid)
                        or probe.unsliceable.get(lid) else rules[lid])
                if rule is not None and not probe.nested.get(lid):
                    if key in {var_key(w) for w in rule.variables(layer)}:
                        claims[key], claim_path[key] = lid, RULE
                    break  # a rule layer reads only its own variables; others: the Jacobian
                if local_capable(layer):
                    claims[key], claim_path[key] = lid, LOCAL
                    break
        # A rule layer must own every variable its rule lists; one read elsewhere demotes it.
        newly = set()
        for layer in layers:
            lid, rule = id(layer), rules[id(layer)]
            if (rule is None or lid in demoted or probe.declined.get(lid) or probe.nested.get(lid)
                    or probe.unsliceable.get(lid)):
                continue
            lost = [w for w in rule.variables(layer) if claims.get(var_key(w)) != lid]
            if lost:
                newly.add(lid)
                reasons[layer.name] = (
                    f"variable {lost[0].path} is also read outside this layer (shared with another "
                    "layer), so its per-example gradient sums both uses")
        if not newly:
            break
        demoted |= newly

    by_id = {id(layer): layer for layer in layers}
    rule_layers = [(layer, rules[id(layer)]) for layer in layers
                   if rules[id(layer)] is not None and id(layer) not in demoted
                   and not probe.declined.get(id(layer)) and not probe.nested.get(id(layer))]
    local: Dict[int, List[Any]] = {}
    jacobian, unused = [], []
    for v in variables:
        key = var_key(v)
        if not reads[key]:
            unused.append(v)
        elif claim_path.get(key) == LOCAL:
            local.setdefault(claims[key], []).append(v)
        elif claim_path.get(key) != RULE:
            jacobian.append(v)
    for v in jacobian:
        reasons.setdefault(_owner_name(v), "no single layer call that can be re-run per example "
                           "reads this variable")
    # Keep rules only for layers that still claim their variables.
    rule_layers = [(layer, rule) for layer, rule in rule_layers
                   if all(claims.get(var_key(w)) == id(layer) for w in rule.variables(layer))]
    return GradientPlan(rules=rule_layers,
                        local=[(by_id[lid], vs) for lid, vs in local.items()],
                        jacobian=jacobian, unused=unused, reasons=reasons,
                        order=[layer.name for layer in layers])
