"""Per-example gradient norms and clipped gradient sums from a layer's input and output gradient.

For a layer whose output (before activation) is z = f(a, W), the gradient of example
b's loss with respect to W is a function of a[b] and g[b] = dL_b/dz[b] only. Each
rule below re-runs its layer's forward pass so that `z` is a tensor the tape can
differentiate to, then turns (a, g) into per-example norms and into the sum of
clipped per-example gradients, sum_b w_b * grad_b, without a second backward pass.
A layer called several times contributes the sum of its calls, which each rule
handles by stacking the calls along a position axis.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import keras
import tensorflow as tf

# One call of a layer: (its input a, the gradient g of the per-example losses' sum w.r.t. z).
Call = Tuple[tf.Tensor, tf.Tensor]


def var_key(variable) -> int:
    """A hashable identity of a variable: the same for a Keras variable and its tf.Variable."""
    return id(variable.value) if isinstance(variable, keras.Variable) else id(variable)


def _flatten_positions(t: tf.Tensor) -> tf.Tensor:
    """[B, ..., d] -> [B, T, d]: every position between batch and features in one axis."""
    shape = tf.shape(t)
    return tf.reshape(t, [shape[0], -1, shape[-1]])


def _sq_norm(t: tf.Tensor) -> tf.Tensor:
    """Per-example squared L2 norm of a [B, ...] tensor."""
    return tf.reduce_sum(tf.reshape(tf.square(t), [tf.shape(t)[0], -1]), axis=1)


def _l1_norm(t: tf.Tensor) -> tf.Tensor:
    """Per-example L1 norm of a [B, ...] tensor."""
    return tf.reduce_sum(tf.reshape(tf.abs(t), [tf.shape(t)[0], -1]), axis=1)


def _per_example_norm(per_example: tf.Tensor, kind: str) -> tf.Tensor:
    return _sq_norm(per_example) if kind == "l2" else _l1_norm(per_example)


class LayerRule:
    """How one layer type is re-run, and how its per-example gradients are measured and summed."""

    layer_types: Tuple[type, ...] = ()

    def supports(self, layer: keras.layers.Layer) -> bool:
        """True when this rule handles `layer` exactly."""
        return isinstance(layer, self.layer_types)

    def forward(self, layer, inputs) -> Optional[Tuple[tf.Tensor, tf.Tensor, tf.Tensor]]:
        """Returns (output, a, z): the layer's output, the captured input and pre-activation.

        Returns None when this call cannot be handled exactly (the layer then runs as
        usual and its variables take the Jacobian fallback).
        """
        raise NotImplementedError

    def variables(self, layer) -> List[tf.Variable]:
        """The trainable variables whose gradients this rule produces."""
        return [v for v in (getattr(layer, "kernel", None), getattr(layer, "bias", None))
                if v is not None and v.trainable]

    def norms(self, layer, calls: Sequence[Call], kind: str) -> tf.Tensor:
        """Per-example squared L2 norm (kind "l2") or L1 norm (kind "l1") over `variables`."""
        raise NotImplementedError

    def weighted_sums(self, layer, calls: Sequence[Call], weights: tf.Tensor) -> Dict:
        """{var_key(variable): sum_b weights[b] * per-example gradient[b]}."""
        raise NotImplementedError


class DenseRule(LayerRule):
    """Dense: grad_W[b] = sum_t a[b,t] g[b,t]^T, grad_bias[b] = sum_t g[b,t]."""

    layer_types = (keras.layers.Dense,)

    def forward(self, layer, inputs):
        if isinstance(inputs, (tf.SparseTensor, tf.RaggedTensor)):
            return None
        a = tf.convert_to_tensor(inputs)
        if a.shape.rank == 2:
            z = tf.matmul(a, layer.kernel)
        else:
            z = tf.tensordot(a, layer.kernel, [[a.shape.rank - 1], [0]])
        if layer.use_bias:
            z = tf.nn.bias_add(z, layer.bias)
        return layer.activation(z), a, z

    @staticmethod
    def _stacked(calls):
        a = tf.concat([_flatten_positions(a) for a, _ in calls], axis=1)
        g = tf.concat([_flatten_positions(g) for _, g in calls], axis=1)
        return a, g

    def norms(self, layer, calls, kind):
        if len(calls) == 1 and calls[0][0].shape.rank == 2:
            a, g = calls[0]
            # The kernel gradient is the outer product a g^T, whose L2 (Frobenius) and L1
            # norms are the products of a's and g's norms; the bias gradient is g.
            size = tf.square if kind == "l2" else tf.abs
            g_size = tf.reduce_sum(size(g), 1)
            total = tf.reduce_sum(size(a), 1) * g_size
            return total + g_size if layer.use_bias else total
        a, g = self._stacked(calls)
        bias_grad = tf.reduce_sum(g, axis=1)
        if kind == "l2":
            # Ghost norm: |sum_t a_t g_t^T|^2 = sum_{t,s} (a_t . a_s)(g_t . g_s), no [B, in, out].
            aa = tf.einsum("bti,bsi->bts", a, a)
            gg = tf.einsum("bto,bso->bts", g, g)
            total = tf.reduce_sum(aa * gg, axis=[1, 2])
        else:
            total = _l1_norm(tf.einsum("bti,bto->bio", a, g))
        return total + _per_example_norm(bias_grad, kind) if layer.use_bias else total

    def weighted_sums(self, layer, calls, weights):
        if len(calls) == 1 and calls[0][0].shape.rank == 2:
            a, g = calls[0]
            gw = g * tf.cast(weights, g.dtype)[:, None]
            sums = {var_key(layer.kernel): tf.matmul(a, gw, transpose_a=True)}
            if layer.use_bias:
                sums[var_key(layer.bias)] = tf.reduce_sum(gw, axis=0)
            return sums
        a, g = self._stacked(calls)
        gw = g * tf.cast(weights, g.dtype)[:, None, None]
        sums = {var_key(layer.kernel): tf.einsum("bti,bto->io", a, gw)}
        if layer.use_bias:
            sums[var_key(layer.bias)] = tf.reduce_sum(gw, axis=[0, 1])
        return sums


class ConvRule(LayerRule):
    """Conv1D/Conv2D (groups 1, channels last): per-example kernel gradients from input patches."""

    layer_types = (keras.layers.Conv1D, keras.layers.Conv2D)

    def supports(self, layer):
        return (
            isinstance(layer, self.layer_types)
            and not isinstance(layer, (keras.layers.Conv1DTranspose,
                                       keras.layers.Conv2DTranspose,
                                       keras.layers.SeparableConv1D,
                                       keras.layers.SeparableConv2D,
                                       keras.layers.DepthwiseConv2D))
            and layer.groups == 1
            and layer.data_format == "channels_last"
        )

    def forward(self, layer, inputs):
        a = tf.convert_to_tensor(inputs)
        padding = layer.padding.upper()
        if layer.padding == "causal":
            a = tf.pad(a, layer._compute_causal_padding())  # pylint: disable=protected-access
            padding = "VALID"
        z = tf.nn.convolution(a, layer.kernel, strides=list(layer.strides), padding=padding,
                              dilations=list(layer.dilation_rate))
        if layer.use_bias:
            z = tf.nn.bias_add(z, layer.bias)
        return layer.activation(z), a, z

    def _patches(self, layer, a):
        """[B, positions, k*...*c_in] patches in the kernel's row-major order."""
        padding = "VALID" if layer.padding in ("valid", "causal") else "SAME"
        if layer.rank == 1:
            a = a[:, None, :, :]
            sizes, strides, rates = (1, layer.kernel_size[0]), (1, layer.strides[0]), (
                1, layer.dilation_rate[0])
        else:
            sizes, strides, rates = layer.kernel_size, layer.strides, layer.dilation_rate
        channels = a.shape[-1]
        if channels is not None and channels <= 3:
            # Few input channels: a convolution with one-hot filters extracts the same patches
            # several times faster than extract_patches on CPU.
            width = sizes[0] * sizes[1] * channels
            one_hot = tf.reshape(tf.eye(width, dtype=a.dtype), [sizes[0], sizes[1], channels, width])
            patches = tf.nn.convolution(a, one_hot, strides=list(strides), padding=padding,
                                        dilations=list(rates))
        else:
            patches = tf.image.extract_patches(
                a,
                sizes=[1, sizes[0], sizes[1], 1],
                strides=[1, strides[0], strides[1], 1],
                rates=[1, rates[0], rates[1], 1],
                padding=padding,
            )
        return _flatten_positions(patches)

    @staticmethod
    def _batch_as_channels_applies(layer, a):
        return (layer.rank == 2 and a.shape[-1] is not None and a.shape[-1] <= 3
                and layer.strides[0] == layer.strides[1] and tuple(layer.dilation_rate) == (1, 1))

    @staticmethod
    def _batch_as_channels_sq_norms(layer, a, g):
        """Per-example squared kernel-gradient norms with one depthwise filter-gradient op.

        The batch is folded into the channels ([1, H, W, B*c_in]) and each example's output
        gradient is repeated for its input channels, so the depthwise filter gradient
        [kh, kw, B*c_in, c_out] holds every example's kernel gradient; for narrow inputs this
        is faster than extracting patches.
        """
        shape, out_shape = tf.shape(a), tf.shape(g)
        batch, c_in, c_out = shape[0], a.shape[-1], g.shape[-1]
        x = tf.reshape(tf.transpose(a, [1, 2, 0, 3]), [1, shape[1], shape[2], batch * c_in])
        repeated = tf.tile(g[:, :, :, None, :], [1, 1, 1, c_in, 1])
        repeated = tf.reshape(tf.transpose(repeated, [1, 2, 0, 3, 4]),
                              [1, out_shape[1], out_shape[2], batch * c_in * c_out])
        kernel_h, kernel_w = layer.kernel_size
        grads = tf.nn.depthwise_conv2d_backprop_filter(
            x, tf.stack([kernel_h, kernel_w, batch * c_in, c_out]), repeated,
            strides=[1, layer.strides[0], layer.strides[1], 1],
            padding="VALID" if layer.padding == "valid" else "SAME",
        )
        grads = tf.reshape(grads, [kernel_h * kernel_w, batch, c_in * c_out])
        return tf.reduce_sum(tf.square(grads), axis=[0, 2])

    def norms(self, layer, calls, kind):
        if kind == "l2" and len(calls) == 1 and self._batch_as_channels_applies(layer, calls[0][0]):
            a, g = calls[0]
            total = self._batch_as_channels_sq_norms(layer, a, g)
            bias = _sq_norm(tf.reduce_sum(_flatten_positions(g), axis=1)) if layer.use_bias else 0.0
            return total + bias
        if kind == "l2" and len(calls) == 1:
            a, g = calls[0]
            patches, g = self._patches(layer, a), _flatten_positions(g)
            positions = g.shape[1]
            k_in, k_out = patches.shape[-1], g.shape[-1]
            bias = _sq_norm(tf.reduce_sum(g, axis=1)) if layer.use_bias else 0.0
            if None not in (positions, k_in, k_out) and positions * (k_in + k_out) < k_in * k_out:
                # Ghost norm: sum_{p,q} (x_p . x_q)(g_p . g_q), cheaper when positions are few.
                gram = tf.matmul(patches, patches, transpose_b=True) * tf.matmul(g, g, transpose_b=True)
                return tf.reduce_sum(gram, axis=[1, 2]) + bias
            return _sq_norm(tf.matmul(patches, g, transpose_a=True)) + bias
        kernel, bias = self._per_example(layer, calls)
        total = _per_example_norm(kernel, kind)
        return total if bias is None else total + _per_example_norm(bias, kind)

    def _per_example(self, layer, calls):
        kernel_grads, bias_grads = [], []
        for a, g in calls:
            g = _flatten_positions(g)
            kernel_grads.append(tf.matmul(self._patches(layer, a), g, transpose_a=True))
            bias_grads.append(tf.reduce_sum(g, axis=1))
        kernel = tf.add_n(kernel_grads)
        return kernel, (tf.add_n(bias_grads) if layer.use_bias else None)

    def weighted_sums(self, layer, calls, weights):
        # sum_b w_b grad_b is the ordinary filter gradient of the reweighted output gradient.
        kernel_sum, bias_sum = None, None
        for a, g in calls:
            gw = g * tf.cast(weights, g.dtype)[(slice(None),) + (None,) * (g.shape.rank - 1)]
            k = self._filter_gradient(layer, a, gw)
            kernel_sum = k if kernel_sum is None else kernel_sum + k
            b = tf.reduce_sum(gw, axis=list(range(g.shape.rank - 1)))
            bias_sum = b if bias_sum is None else bias_sum + b
        sums = {var_key(layer.kernel): kernel_sum}
        if layer.use_bias:
            sums[var_key(layer.bias)] = bias_sum
        return sums

    @staticmethod
    def _filter_gradient(layer, a, g):
        padding = "VALID" if layer.padding in ("valid", "causal") else "SAME"
        if layer.rank == 1:
            a, g = a[:, None], g[:, None]
            strides, dilations = (1, layer.strides[0]), (1, layer.dilation_rate[0])
            shape = (1,) + tuple(layer.kernel.shape)
        else:
            strides, dilations, shape = layer.strides, layer.dilation_rate, tuple(layer.kernel.shape)
        if tuple(dilations) == (1, 1):
            kernel = tf.compat.v1.nn.conv2d_backprop_filter(
                a, shape, g, strides=[1, strides[0], strides[1], 1], padding=padding,
            )
        else:
            # Conv2DBackpropFilter with dilation > 1 exists only in oneDNN and GPU builds; the
            # gradient of tf.nn.convolution (space-to-batch around a plain convolution) is the
            # same filter gradient on every backend.
            zero_kernel = tf.zeros(shape, a.dtype)
            with tf.GradientTape() as tape:
                tape.watch(zero_kernel)
                z = tf.nn.convolution(a, zero_kernel, strides=list(strides), padding=padding,
                                      dilations=list(dilations))
            kernel = tape.gradient(z, zero_kernel, output_gradients=g)
        return tf.reshape(kernel, layer.kernel.shape)


class EmbeddingRule(LayerRule):
    """Embedding: row r of example b's gradient is the sum of g at the positions holding token r."""

    layer_types = (keras.layers.Embedding,)

    def supports(self, layer):
        return super().supports(layer) and not getattr(layer, "sparse", False)

    def variables(self, layer):
        return [layer.embeddings] if layer.embeddings.trainable else []

    def forward(self, layer, inputs):
        ids = tf.cast(inputs, tf.int32)
        z = tf.gather(layer.embeddings, ids)
        return z, ids, z

    @staticmethod
    def _stacked(calls):
        ids = tf.concat([tf.reshape(a, [tf.shape(a)[0], -1]) for a, _ in calls], axis=1)
        g = tf.concat([_flatten_positions(g) for _, g in calls], axis=1)
        return ids, g

    def norms(self, layer, calls, kind):
        ids, g = self._stacked(calls)
        if kind == "l2":
            same = tf.cast(tf.equal(ids[:, :, None], ids[:, None, :]), g.dtype)
            return tf.reduce_sum(same * tf.einsum("btd,bsd->bts", g, g), axis=[1, 2])
        # L1: sum per (example, token) first; segment ids make tokens of different examples distinct.
        batch = tf.shape(ids)[0]
        vocab = tf.shape(layer.embeddings)[0]
        segments = ids + vocab * tf.range(batch)[:, None]
        rows = tf.math.unsorted_segment_sum(
            tf.reshape(g, [-1, tf.shape(g)[-1]]), tf.reshape(segments, [-1]), batch * vocab
        )
        return tf.reduce_sum(tf.reshape(tf.abs(rows), [batch, -1]), axis=1)

    def weighted_sums(self, layer, calls, weights):
        ids, g = self._stacked(calls)
        gw = g * tf.cast(weights, g.dtype)[:, None, None]
        dense = tf.math.unsorted_segment_sum(
            tf.reshape(gw, [-1, tf.shape(gw)[-1]]), tf.reshape(ids, [-1]),
            tf.shape(layer.embeddings)[0],
        )
        return {var_key(layer.embeddings): dense}


class LayerNormalizationRule(LayerRule):
    """LayerNormalization over the last axis: grad_gamma[b] = sum_t g*x_hat, grad_beta[b] = sum_t g."""

    layer_types = (keras.layers.LayerNormalization,)

    def variables(self, layer):
        return [v for v in (layer.gamma, layer.beta) if v is not None and v.trainable]

    def forward(self, layer, inputs):
        x = tf.convert_to_tensor(inputs)
        axis = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
        axes = [a % x.shape.rank for a in axis]
        if axes != [x.shape.rank - 1] or getattr(layer, "rms_scaling", False):
            return None  # normalization over other axes: Jacobian fallback
        mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
        x_hat = (x - mean) * tf.math.rsqrt(variance + layer.epsilon)
        z = x_hat
        if layer.gamma is not None:
            z = z * layer.gamma
        if layer.beta is not None:
            z = z + layer.beta
        return z, x_hat, z

    def _per_example(self, layer, calls):
        grads = {}
        for x_hat, g in calls:
            x_hat, g = _flatten_positions(x_hat), _flatten_positions(g)
            if layer.gamma is not None and layer.gamma.trainable:
                grads.setdefault("gamma", []).append(tf.reduce_sum(g * x_hat, axis=1))
            if layer.beta is not None and layer.beta.trainable:
                grads.setdefault("beta", []).append(tf.reduce_sum(g, axis=1))
        return {k: tf.add_n(v) for k, v in grads.items()}

    def norms(self, layer, calls, kind):
        return tf.add_n([_per_example_norm(t, kind) for t in self._per_example(layer, calls).values()])

    def weighted_sums(self, layer, calls, weights):
        sums = {}
        for name, per_example in self._per_example(layer, calls).items():
            variable = getattr(layer, name)
            sums[var_key(variable)] = tf.tensordot(tf.cast(weights, per_example.dtype), per_example, 1)
        return sums


RULES: Tuple[LayerRule, ...] = (DenseRule(), ConvRule(), EmbeddingRule(), LayerNormalizationRule())


def rule_for(layer: keras.layers.Layer) -> Optional[LayerRule]:
    """The rule that handles `layer`, or None (its variables then take the Jacobian fallback)."""
    for rule in RULES:
        if rule.supports(layer):
            return rule
    return None
