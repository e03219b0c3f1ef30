"""SimpleRNN, GRU and LSTM: the recurrence unrolled, per-step pre-activations as z.

Keras runs a recurrent layer's steps in a `tf.while_loop` (or one cuDNN kernel), inside
which no step's tensors can be differentiated to from outside. The rule re-runs the
recurrence unrolled in Python over the static number of time steps, so that every step's
pre-activations are tensors of the graph. With g_t the gradient of the per-example losses'
sum w.r.t. step t's pre-activations (through every later step), example b's gradients are

    kernel            sum_t x_t[b] g_t[b]^T
    recurrent kernel  sum_t h_{t-1}[b] g_t[b]^T      (GRU reset_after=False: the candidate
                                                      gate's columns take r_t * h_{t-1})
    bias              sum_t g_t[b]

a Dense-like map with T positions: per-example norms by the ghost norm over the positions,
or from the materialized [B, in, out] gradients, whichever costs less at trace time.

Supported: `keras.layers.SimpleRNN`, `GRU` (reset_after True and False, implementation 1
and 2), `LSTM`, and `keras.layers.RNN` around one of their cells; return_sequences,
return_state, go_backwards, zero_output_for_mask, unroll, an initial state, masks (masked
steps carry state and output through, as Keras does). Declined (exact fallback):
stateful layers, dropout or recurrent_dropout > 0, subclassed cells, a time dimension that
is unknown or longer than `max_timesteps`, and, where Keras would run cuDNN (a GPU), a mask
(cuDNN's padded outputs differ from the loop's).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import keras
import tensorflow as tf

from tfdp.training.rules.base import LayerRule, l1_norm, sq_norm, var_key
from tfdp.training.rules.registry import layer_rule

_CELLS = (keras.layers.SimpleRNNCell, keras.layers.GRUCell, keras.layers.LSTMCell)
_TANH = (keras.activations.tanh, tf.tanh, keras.ops.tanh)
_SIGMOID = (keras.activations.sigmoid, tf.sigmoid, keras.ops.sigmoid)
_CALL_ARGS = ("initial_state", "mask", "training")

# A linear piece of a variable's per-example gradient: sum_p a[b, p]^T g[b, p], with `a`
# [B, P, d_in] (None: a bias, whose piece is sum_p g[b, p]). `where` places the piece in
# the variable: None (all of it), ("row", i) (row i of a 2-D bias) or ("cols", i) (the i-th
# of the column blocks that, concatenated in order, make the variable).
# A group: (g [B, P, d_out], [(variable, where, a), ...]) -- members sharing one g.


def _cell_call_is_standard(cell) -> bool:
    return any(type(cell).call is c.call for c in _CELLS if isinstance(cell, c))


def _cudnn_would_run(layer) -> bool:
    """True where Keras's GRU/LSTM would hand the loop to cuDNN (its padded outputs differ)."""
    cell = layer.cell
    if not isinstance(layer, (keras.layers.GRU, keras.layers.LSTM)):
        return False
    if getattr(layer, "use_cudnn", "auto") not in ("auto", True):
        return False
    ok = (cell.activation in _TANH and cell.recurrent_activation in _SIGMOID
          and not layer.unroll and cell.use_bias)
    if isinstance(cell, keras.layers.GRUCell):
        ok = ok and cell.reset_after
    return ok and bool(tf.config.list_logical_devices("GPU"))


def _select(condition, new, old):
    """new where condition else old; all three [B, units] (Select: no broadcasting to undo)."""
    return tf.compat.v1.where(condition, new, old)


def _read(variable) -> Optional[tf.Tensor]:
    """The variable's value, read once for all the steps (None stays None)."""
    return None if variable is None else tf.convert_to_tensor(variable)


def _matmul_positions(x: tf.Tensor, kernel) -> tf.Tensor:
    """[B, T, in] @ [in, out] -> [B, T, out] as one matmul over all B*T rows."""
    shape = tf.shape(x)
    flat = tf.matmul(tf.reshape(x, [-1, x.shape[-1]]), kernel)
    return tf.reshape(flat, tf.concat([shape[:2], [flat.shape[-1]]], 0))


@layer_rule(keras.layers.SimpleRNN, keras.layers.GRU, keras.layers.LSTM, keras.layers.RNN)
class RecurrentRule(LayerRule):
    """SimpleRNN / GRU / LSTM (or RNN around their cells): the recurrence unrolled."""

    # Longer sequences take the fallback: the unrolled graph grows with T.
    max_timesteps = 256
    # How L2 norms are computed: "auto" (fewer FLOPs at trace time), "ghost" or "materialized".
    l2_method = "auto"

    # ----- which layers -----

    def supports(self, layer):
        if not super().supports(layer):
            return False
        cell = getattr(layer, "cell", None)
        if not isinstance(cell, _CELLS) or not _cell_call_is_standard(cell):
            return False
        if type(layer).inner_loop not in (keras.layers.RNN.inner_loop, keras.layers.GRU.inner_loop,
                                          keras.layers.LSTM.inner_loop):
            return False
        if isinstance(layer, keras.layers.GRU) and not isinstance(cell, keras.layers.GRUCell):
            return False
        if isinstance(layer, keras.layers.LSTM) and not isinstance(cell, keras.layers.LSTMCell):
            return False
        if isinstance(layer, keras.layers.SimpleRNN) and not isinstance(
                cell, keras.layers.SimpleRNNCell):
            return False
        return not layer.stateful and not cell.dropout and not cell.recurrent_dropout

    def variables(self, layer):
        cell = layer.cell
        trainable = {id(w) for w in layer.trainable_weights}
        candidates = (getattr(cell, name, None) for name in ("kernel", "recurrent_kernel", "bias"))
        return [v for v in candidates
                if v is not None and id(v) in trainable]

    # ----- the forward pass -----

    @tf.autograph.experimental.do_not_convert
    def forward(self, layer, inputs, *args, **kwargs):
        for name, value in zip(_CALL_ARGS, args):
            kwargs[name] = value
        if isinstance(inputs, (tf.SparseTensor, tf.RaggedTensor, list, tuple, dict)):
            return None
        x = tf.convert_to_tensor(inputs)
        steps = x.shape[1] if x.shape.rank == 3 else None
        if steps is None or steps == 0 or steps > self.max_timesteps or x.shape[-1] is None:
            return None
        cell = layer.cell
        mask = kwargs.get("mask")
        if isinstance(mask, (list, tuple)):
            flat = tf.nest.flatten(mask)
            if isinstance(cell, keras.layers.SimpleRNNCell) or not flat:
                return None
            mask = flat[0]
        if mask is not None:
            mask = tf.convert_to_tensor(mask)
            if mask.shape.rank != 2 or _cudnn_would_run(layer):
                return None
            mask = tf.cast(mask, tf.bool)
        initial_state = kwargs.get("initial_state")
        states = self._initial_state(layer, x, initial_state)
        if states is None:
            return None
        if layer.go_backwards:
            x = tf.reverse(x, [1])
            if mask is not None:
                mask = tf.reverse(mask, [1])
        x = tf.cast(x, cell.compute_dtype)
        if isinstance(cell, keras.layers.SimpleRNNCell):
            run = self._simple_rnn
        elif isinstance(cell, keras.layers.GRUCell):
            run = self._gru
        else:
            run = self._lstm
        outputs, _, a, z = self._unrolled(layer, x, mask, states, initial_state is None, run)
        return outputs, a, z

    @staticmethod
    def _initial_state(layer, x, initial_state) -> Optional[List[tf.Tensor]]:
        cell = layer.cell
        count = 2 if isinstance(cell, keras.layers.LSTMCell) else 1
        if initial_state is None:
            batch = tf.shape(x)[0]
            return [tf.zeros([batch, cell.units], cell.compute_dtype) for _ in range(count)]
        if not isinstance(initial_state, (list, tuple)):
            initial_state = [initial_state]
        initial_state = list(initial_state)
        if len(initial_state) != count or any(
                isinstance(s, (list, tuple, dict, tf.SparseTensor, tf.RaggedTensor))
                for s in initial_state):
            return None
        return [tf.cast(tf.convert_to_tensor(s), cell.compute_dtype) for s in initial_state]

    def _unrolled(self, layer, x, mask, states, zero_start, run):
        """Runs the steps as Keras's `backend.rnn` does: masked steps carry output and state."""
        steps = x.shape[1]
        step, finish = run(layer, x)
        # The output is the first state (h) when both start from zeros: at a masked step
        # Keras keeps the previous output and the previous state, the same tensor then.
        output_is_state = zero_start and not layer.zero_output_for_mask
        if mask is not None:
            # One [B, units] condition per step, so each selection is a plain Select.
            shape = tf.shape(states[0])
            masks = tf.unstack(tf.broadcast_to(mask[:, :, None], [shape[0], steps, shape[1]]),
                               axis=1)
            zeros = tf.zeros_like(states[0])
        outputs, output = [], None
        for t in range(steps):
            new_output, new_states = step(t, states)
            if mask is None:
                output = new_output
            else:
                m = masks[t]
                new_states = [_select(m, new, old) for new, old in zip(new_states, states)]
                if output_is_state:
                    output = new_states[0]
                elif layer.zero_output_for_mask:
                    output = _select(m, new_output, zeros)
                else:
                    output = _select(m, new_output, zeros if output is None else output)
            states = new_states
            if layer.return_sequences:
                outputs.append(output)
        a, z = finish()
        result = tf.stack(outputs, axis=1) if layer.return_sequences else output
        result = tf.cast(result, layer.compute_dtype)
        states = [tf.cast(s, layer.compute_dtype) for s in states]
        if layer.return_state:
            result = (result, *states)
        return result, states, a, z

    # Each `run(layer, x)` returns (step, finish): step(t, states) -> (output, new states),
    # recording what the gradients need; finish() -> (a, z) once every step has run.

    @staticmethod
    def _simple_rnn(layer, x):
        cell = layer.cell
        recurrent_kernel, bias = _read(cell.recurrent_kernel), _read(cell.bias)
        zx = _matmul_positions(x, _read(cell.kernel))
        if bias is not None:
            zx = zx + bias
        zx_steps = tf.unstack(zx, axis=1)
        pre, previous = [], []

        def step(t, states):
            h = states[0]
            z_t = zx_steps[t] + tf.matmul(h, recurrent_kernel)
            pre.append(z_t)
            previous.append(h)
            out = cell.activation(z_t) if cell.activation is not None else z_t
            return out, [out]

        def finish():
            return (x, tf.stack(previous, axis=1)), pre

        return step, finish

    @staticmethod
    def _gru(layer, x):
        cell = layer.cell
        units = cell.units
        input_bias = recurrent_bias = None
        bias = _read(cell.bias)
        if bias is not None:
            if cell.reset_after:
                input_bias, recurrent_bias = bias[0], bias[1]
            else:
                input_bias = bias
        recurrent_kernel = _read(cell.recurrent_kernel)
        if not cell.reset_after:
            gates_kernel = recurrent_kernel[:, :2 * units]
            candidate_kernel = recurrent_kernel[:, 2 * units:]
        zx = _matmul_positions(x, _read(cell.kernel))
        if input_bias is not None:
            zx = zx + input_bias
        x_z_steps, x_r_steps, x_h_steps = (tf.unstack(part, axis=1)
                                           for part in tf.split(zx, 3, axis=-1))
        inner_list, candidate_list, previous, reset_previous = [], [], [], []

        def step(t, states):
            h = states[0]
            x_z, x_r, x_h = x_z_steps[t], x_r_steps[t], x_h_steps[t]
            if cell.reset_after:
                inner = tf.matmul(h, recurrent_kernel)
                if recurrent_bias is not None:
                    inner = inner + recurrent_bias
            else:
                inner = tf.matmul(h, gates_kernel)
            inner_list.append(inner)
            previous.append(h)
            z = cell.recurrent_activation(x_z + inner[:, :units])
            r = cell.recurrent_activation(x_r + inner[:, units:2 * units])
            if cell.reset_after:
                recurrent_h = r * inner[:, 2 * units:]
            else:
                rh = r * h
                reset_previous.append(rh)
                recurrent_h = tf.matmul(rh, candidate_kernel)
                candidate_list.append(recurrent_h)
            hh = cell.activation(x_h + recurrent_h)
            out = z * h + (1 - z) * hh
            return out, [out]

        def finish():
            hs = tf.stack(previous, axis=1)
            if cell.reset_after:
                return (x, hs), (zx, inner_list)
            return (x, hs, tf.stack(reset_previous, axis=1)), (zx, inner_list, candidate_list)

        return step, finish

    @staticmethod
    def _lstm(layer, x):
        cell = layer.cell
        recurrent_kernel, bias = _read(cell.recurrent_kernel), _read(cell.bias)
        # The bias joins the input projection (Keras adds it after h U: the same up to rounding).
        zx = _matmul_positions(x, _read(cell.kernel))
        if bias is not None:
            zx = zx + bias
        zx_steps = tf.unstack(zx, axis=1)
        pre, previous = [], []

        def step(t, states):
            h, c = states
            z_t = zx_steps[t] + tf.matmul(h, recurrent_kernel)
            pre.append(z_t)
            previous.append(h)
            z0, z1, z2, z3 = tf.split(z_t, 4, axis=1)
            i = cell.recurrent_activation(z0)
            f = cell.recurrent_activation(z1)
            c_new = f * c + i * cell.activation(z2)
            o = cell.recurrent_activation(z3)
            h_new = o * cell.activation(c_new)
            return h_new, [h_new, c_new]

        def finish():
            return (x, tf.stack(previous, axis=1)), pre

        return step, finish

    # ----- the gradients' linear pieces -----

    @staticmethod
    def _groups(layer, a, g) -> List[Tuple[tf.Tensor, List[Tuple[Any, Any, Optional[tf.Tensor]]]]]:
        """One call's groups: (g [B, T, d_out], [(variable, where, a [B, T, d_in] | None)])."""
        cell = layer.cell
        if isinstance(cell, keras.layers.GRUCell):
            if cell.reset_after:
                (x, hs), (gx, g_inner) = a, g
                g_inner = tf.stack(g_inner, axis=1)
                return [
                    (gx, [(cell.kernel, None, x), (cell.bias, ("row", 0), None)]),
                    (g_inner, [(cell.recurrent_kernel, None, hs), (cell.bias, ("row", 1), None)]),
                ]
            (x, hs, rhs), (gx, g_inner, g_candidate) = a, g
            return [
                (gx, [(cell.kernel, None, x), (cell.bias, None, None)]),
                (tf.stack(g_inner, axis=1), [(cell.recurrent_kernel, ("cols", 0), hs)]),
                (tf.stack(g_candidate, axis=1), [(cell.recurrent_kernel, ("cols", 1), rhs)]),
            ]
        (x, hs), g_pre = a, tf.stack(g, axis=1)
        return [(g_pre, [(cell.kernel, None, x), (cell.recurrent_kernel, None, hs),
                         (cell.bias, None, None)])]

    def _stacked_groups(self, layer, calls):
        """The groups of all calls, each call's positions concatenated (shared weights)."""
        trainable = {var_key(v) for v in self.variables(layer)}
        per_call = [self._groups(layer, a, g) for a, g in calls]
        groups = []
        for parts in zip(*per_call):
            g = tf.concat([p[0] for p in parts], axis=1) if len(parts) > 1 else parts[0][0]
            members = []
            for m, (var, where, _) in enumerate(parts[0][1]):
                if var is None or var_key(var) not in trainable:
                    continue
                pieces = [p[1][m][2] for p in parts]
                a = None if pieces[0] is None else (
                    tf.concat(pieces, axis=1) if len(pieces) > 1 else pieces[0])
                members.append((var, where, a))
            if members:
                groups.append((g, members))
        return groups

    @staticmethod
    def _piece(a, g):
        """[B, d_in, d_out] per-example gradient piece (or [B, d_out] for a bias)."""
        if a is None:
            return tf.reduce_sum(g, axis=1)
        return tf.einsum("bpi,bpo->bio", a, g)

    @tf.autograph.experimental.do_not_convert
    def norms(self, layer, calls, kind):
        total = None
        for g, members in self._stacked_groups(layer, calls):
            positions, d_out = g.shape[1], g.shape[-1]
            d_in = sum(a.shape[-1] for _, _, a in members if a is not None)
            ghost = kind == "l2" and d_in > 0 and (
                self.l2_method == "ghost" or self.l2_method == "auto"
                and positions * (d_in + d_out) < d_in * d_out)
            if ghost:
                # sum_{t,s} (sum_members a_t . a_s)(g_t . g_s); a bias's a is 1 at every position.
                grams = [tf.einsum("bpi,bqi->bpq", a, a) for _, _, a in members if a is not None]
                aa = tf.add_n(grams)
                if any(a is None for _, _, a in members):
                    aa = aa + 1.0
                gg = tf.einsum("bpo,bqo->bpq", g, g)
                part = tf.reduce_sum(aa * gg, axis=[1, 2])
            else:
                size = sq_norm if kind == "l2" else l1_norm
                part = tf.add_n([size(self._piece(a, g)) for _, _, a in members])
            total = part if total is None else total + part
        if total is None:
            return tf.zeros([tf.shape(calls[0][0][0])[0]], calls[0][0][0].dtype)
        return total

    @tf.autograph.experimental.do_not_convert
    def weighted_sums(self, layer, calls, weights):
        placed: Dict[int, Tuple[Any, list]] = {}
        for g, members in self._stacked_groups(layer, calls):
            gw = g * tf.cast(weights, g.dtype)[:, None, None]
            for var, where, a in members:
                value = (tf.reduce_sum(gw, axis=[0, 1]) if a is None
                         else tf.einsum("bpi,bpo->io", a, gw))
                placed.setdefault(var_key(var), (var, []))[1].append((where, value))
        sums = {}
        for key, (var, pieces) in placed.items():
            if len(pieces) == 1 and pieces[0][0] is None:
                sums[key] = pieces[0][1]
                continue
            kinds = {where[0] for where, _ in pieces}
            if kinds == {"row"}:
                rows = dict((where[1], value) for where, value in pieces)
                sums[key] = tf.stack([rows[i] for i in range(var.shape[0])], axis=0)
            else:  # column blocks (GRU reset_after=False: z, r | candidate)
                blocks = sorted(((where[1], value) for where, value in pieces),
                                key=lambda item: item[0])
                sums[key] = tf.concat([value for _, value in blocks], axis=1)
        return sums
