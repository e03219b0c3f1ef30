"""The DP noise is drawn without waiting for the step's data (it needs only the secret key).

On a large model the Gaussian draw is most of a DP step's fixed cost (MLP of the zoo:
about 4 of the 6 ms that a step costs over plain training); a draw that waits for the
clipped gradients cannot overlap with computing them.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdp


def _ancestors(op):
    seen, stack = set(), [op]
    while stack:
        current = stack.pop()
        for parent in [t.op for t in current.inputs] + list(current.control_inputs):
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return seen


def _traced_step(optimizer):
    variable = keras.Variable(np.zeros((4, 3), "float32"))
    optimizer.build([variable])

    @tf.function
    def step(x):
        clipped_sum = [tf.tile(tf.reduce_sum(x, 0, keepdims=True), [4, 1])]
        size = tf.shape(x)[0]
        optimizer.apply(optimizer.privatize_clipped_sum(clipped_sum, size, size), [variable])

    return step.get_concrete_function(tf.TensorSpec([None, 3], tf.float32)).graph


@pytest.mark.parametrize("arguments", [
    dict(l2_norm_clip=1.0, noise_multiplier=1.0),
    dict(l1_norm_clip=1.0, noise_multiplier=1.0, mechanism="laplace"),
    dict(l2_norm_clip=1.0, noise_multiplier=1.0, floating_point_safe_noise=True),
    dict(l1_norm_clip=1.0, noise_multiplier=1.0, mechanism="laplace",
         floating_point_safe_noise=True),
    dict(l2_norm_clip=1.0, noise_multiplier=1.0, noise_schedule="random",
         noise_probability=0.5, on_skip="drop"),
])
def test_the_noise_draw_does_not_wait_for_the_data(arguments):
    graph = _traced_step(tfdp.DPKerasSGDOptimizer(learning_rate=0.1, **arguments))
    data = [op for op in graph.get_operations() if op.type == "Placeholder"
            and op.outputs[0].dtype == tf.float32]
    draws = [op for op in graph.get_operations() if op.type.startswith("StatelessRandom")]
    assert data and draws
    for draw in draws:
        assert not set(data) & _ancestors(draw), f"{draw.name} waits for the data"
    # Every counter the step advances (the ledger's, the key's draws) does wait for the data:
    # a step that never got a batch counts nothing (and the check above is not vacuous).
    counters = [op for op in graph.get_operations() if op.type == "AssignAddVariableOp"]
    assert counters and all(set(data) & _ancestors(op) for op in counters)
