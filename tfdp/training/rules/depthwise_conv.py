"""DepthwiseConv1D/DepthwiseConv2D: per-example depthwise kernel gradients in one batched op.

The layer's forward is `keras.ops.depthwise_conv` (channels last) plus the bias, which the
rule re-runs as is, so `z` is the pre-activation and `a` the input. Channel c of the input
only meets the kernel slice [..., c, :], so every example's kernel gradient is a depthwise
filter gradient of its own: folding the batch into the channels (input [1, *S, B*C],
output gradient [1, *S', B*C*M]) turns the B per-example gradients into the single
depthwise filter gradient [*k, B*C, M] of a batch-one problem. Per-example gradients are
materialized: a depthwise kernel has only k*C*M entries per example (a ghost norm would
need position-by-position Gram matrices and cost more).

Kernels larger than 3x3 under oneDNN: oneDNN's depthwise filter gradient is slow for them
on the folded problem (B*C channels), e.g. 140-220 ms for MobileNetV3's last 5x5 layer at
4x4 positions, batch 32, 576 channels, against 5 ms for the same sum written out as k*k
shifted products of the input and the output gradient (TensorFlow's own kernel with oneDNN
off takes 9 ms). For those layers, when the output has few positions (where the products are
cheap), the rule sums the shifted products instead; both are exact.

Dilation: the native DepthwiseConv2dNativeBackpropFilter kernel of the plain CPU backend
has no dilation, and Keras computes stride > 1 with dilation > 1 as a stride-1 dilated
convolution followed by subsampling. For those configurations the filter gradient is the
tape gradient of `keras.ops.depthwise_conv` itself with respect to a zero kernel (the
space-to-batch formulation TensorFlow uses for dilated depthwise convolutions), the same
result on every backend. The helpers here are shared with the SeparableConv rule.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import keras
import tensorflow as tf

from tfdp.training.rules.base import PerExampleGradientRule, var_key
from tfdp.training.rules.registry import layer_rule


def needs_decomposition(strides: Sequence[int], dilation_rate: Sequence[int]) -> bool:
    """Whether Keras computes the depthwise conv as a stride-1 dilated conv, then subsamples."""
    return any(s > 1 for s in strides) and any(d > 1 for d in dilation_rate)


def depthwise_config_supported(layer) -> bool:
    """The depthwise configurations the rules compute exactly on every CPU backend.

    channels_last only; padding "valid"/"same" (Keras's depthwise layers have no causal
    padding; explicit padding lists fail in the TensorFlow backend); for 2D, unequal
    strides without dilation run only on oneDNN/GPU builds (the native CPU depthwise
    kernel needs equal strides), so they are declined.
    """
    if layer.data_format != "channels_last" or layer.rank not in (1, 2):
        return False
    if not isinstance(layer.padding, str) or layer.padding not in ("valid", "same"):
        return False
    if (layer.rank == 2 and layer.strides[0] != layer.strides[1]
            and not needs_decomposition(layer.strides, layer.dilation_rate)):
        return False
    return True


def depthwise_forward(layer, a: tf.Tensor, kernel) -> tf.Tensor:
    """The layer's depthwise convolution of `a` with `kernel`, exactly as Keras calls it."""
    return keras.ops.depthwise_conv(a, kernel, strides=layer.strides, padding=layer.padding,
                                    data_format="channels_last",
                                    dilation_rate=layer.dilation_rate)


def depthwise_filter_gradient(layer, x: tf.Tensor, g: tf.Tensor, kernel_shape) -> tf.Tensor:
    """sum over x's batch of the depthwise kernel gradient, shape `kernel_shape`.

    x: [N, *S, C], g: [N, *S', C*M] (the gradient w.r.t. the depthwise output),
    kernel_shape: [*k, C, M] (ints or a 1-D int tensor).
    """
    strides, dilations = tuple(layer.strides), tuple(layer.dilation_rate)
    if all(d == 1 for d in dilations) and (layer.rank == 1 or strides[0] == strides[1]):
        # The native filter-gradient op, as Keras's forward uses it (1D: height one, the
        # stride repeated on that height, which a one-row kernel never steps over).
        if layer.rank == 1:
            x, g = x[:, None], g[:, None]
            shape = tf.concat([[1], kernel_shape], 0)
            step = [1, strides[0], strides[0], 1]
        else:
            shape = tf.convert_to_tensor(kernel_shape)
            step = [1, strides[0], strides[1], 1]
        grad = tf.nn.depthwise_conv2d_backprop_filter(x, tf.cast(shape, tf.int32), g,
                                                      strides=step,
                                                      padding=layer.padding.upper())
        return tf.reshape(grad, kernel_shape)
    # Dilation: the gradient of Keras's own forward (space-to-batch around the native op,
    # or the stride-1 dilated conv and subsampling) w.r.t. a zero kernel.
    zero_kernel = tf.zeros(kernel_shape, x.dtype)
    with tf.GradientTape() as tape:
        tape.watch(zero_kernel)
        out = depthwise_forward(layer, x, zero_kernel)
    return tape.gradient(out, zero_kernel, output_gradients=g)


def _fold_batch(t: tf.Tensor) -> tf.Tensor:
    """[B, *S, C] -> [1, *S, B*C] (channel b*C + c holds example b's channel c)."""
    rank = t.shape.rank
    t = tf.transpose(t, list(range(1, rank - 1)) + [0, rank - 1])
    spatial = tf.shape(t)[:rank - 2]
    return tf.reshape(t, tf.concat([[1], spatial, [-1]], 0))


# Shifted products replace oneDNN's filter gradient for kernels of more than this many taps
# on outputs of at most this many positions (larger outputs: the native op is faster).
_SHIFTED_MIN_TAPS = 10
_SHIFTED_MAX_POSITIONS = 64


def onednn_enabled() -> bool:
    """True when TensorFlow runs its oneDNN CPU kernels in this process."""
    try:
        from tensorflow.python.util import _pywrap_util_port  # pylint: disable=import-outside-toplevel
    except ImportError:  # pragma: no cover - a build without the probe
        return False
    return bool(_pywrap_util_port.IsMklEnabled())


def _use_shifted_products(layer, g: tf.Tensor, kernel_size: Sequence[int]) -> bool:
    """Whether the shifted products beat the native filter gradient for this layer (speed only:
    both are exact)."""
    spatial = g.shape[1:-1]
    if any(d != 1 for d in layer.dilation_rate) or not all(spatial) or None in spatial:
        return False
    taps = 1
    for k in kernel_size:
        taps *= int(k)
    positions = 1
    for d in spatial:
        positions *= int(d)
    return (taps >= _SHIFTED_MIN_TAPS and positions <= _SHIFTED_MAX_POSITIONS
            and onednn_enabled())


def _padded(layer, a: tf.Tensor, out_shape: Sequence[int], kernel_size: Sequence[int]):
    """`a` padded as the convolution pads it ("valid": not at all; "same": TensorFlow's split,
    the smaller half before)."""
    if layer.padding == "valid":
        return a
    pads = [[0, 0]]
    for size, out, k, step in zip(a.shape[1:-1], out_shape, kernel_size, layer.strides):
        total = max((int(out) - 1) * int(step) + int(k) - int(size), 0)
        pads.append([total // 2, total - total // 2])
    return tf.pad(a, pads + [[0, 0]])


def shifted_products_gradients(layer, a: tf.Tensor, g: tf.Tensor, kernel_size: Sequence[int],
                               multiplier: int) -> tf.Tensor:
    """[B, *k, C, M]: every example's depthwise kernel gradient as a sum of shifted products.

    Tap t of the kernel meets the input at positions t + stride * p for the output positions
    p, so its gradient is sum_p a[b, t + stride * p, c] * g[b, p, c, m]. Dilation 1 only.
    """
    out_shape = [int(d) for d in g.shape[1:-1]]
    padded = _padded(layer, a, out_shape, kernel_size)
    g = tf.reshape(g, tf.concat([tf.shape(g)[:-1], [-1, multiplier]], 0))  # [B, *S', C, M]
    positions = list(range(1, len(out_shape) + 1))
    taps = []
    for offset in _offsets(kernel_size):
        window = padded[(slice(None),) + tuple(
            slice(o, o + (n - 1) * int(step) + 1, int(step))
            for o, n, step in zip(offset, out_shape, layer.strides))]
        taps.append(tf.reduce_sum(window[..., None] * g, axis=positions))  # [B, C, M]
    stacked = tf.stack(taps, axis=1)  # [B, prod(k), C, M]
    return tf.reshape(stacked, tf.concat([tf.shape(stacked)[:1], [int(k) for k in kernel_size],
                                          tf.shape(stacked)[2:]], 0))


def _offsets(kernel_size: Sequence[int]):
    """Every tap of the kernel, in the kernel's row-major order."""
    offsets = [()]
    for k in kernel_size:
        offsets = [o + (i,) for o in offsets for i in range(int(k))]
    return offsets


def per_example_depthwise_gradients(layer, a: tf.Tensor, g: tf.Tensor,
                                    kernel_size: Sequence[int], multiplier: int) -> tf.Tensor:
    """[B, *k, C, M]: every example's depthwise kernel gradient, in one filter-gradient op
    (or, for large kernels on few positions under oneDNN, as shifted products).

    a: [B, *S, C] the input, g: [B, *S', C*M] the gradient w.r.t. the depthwise output.
    """
    if _use_shifted_products(layer, g, kernel_size):
        return shifted_products_gradients(layer, a, g, kernel_size, multiplier)
    batch, channels = tf.shape(a)[0], tf.shape(a)[-1]
    k = list(kernel_size)
    folded = depthwise_filter_gradient(
        layer, _fold_batch(a), _fold_batch(g),
        tf.stack(k + [batch * channels, multiplier]))
    rank = len(k)
    folded = tf.reshape(folded, tf.stack(k + [batch, channels, multiplier]))
    return tf.transpose(folded, [rank] + list(range(rank)) + [rank + 1, rank + 2])


def spatial_sum(g: tf.Tensor) -> tf.Tensor:
    """[B, *S, F] -> [B, F]."""
    return tf.reduce_sum(g, axis=list(range(1, g.shape.rank - 1)))


def accepts_input(layer, inputs) -> Optional[tf.Tensor]:
    """The input as a dense tensor of the layer's rank, or None when the rule cannot run it."""
    if isinstance(inputs, (tf.SparseTensor, tf.RaggedTensor)):
        return None
    a = tf.convert_to_tensor(inputs)
    if a.shape.rank != layer.rank + 2 or not a.dtype.is_floating:
        return None
    return a


@layer_rule(keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
class DepthwiseConvRule(PerExampleGradientRule):
    """DepthwiseConv1D/2D (channels last, any depth_multiplier, strides, dilation, padding).

    grad_kernel[b] = depthwise filter gradient of (a[b], g[b]) (all examples in one op, the
    batch folded into the channels); grad_bias[b] = sum over positions of g[b]. The
    weighted sums contract the same per-example gradients with the weights (the graph
    computes them once for the norms and the sums: identical ops are deduplicated).
    """

    def supports(self, layer):
        return super().supports(layer) and depthwise_config_supported(layer)

    def forward(self, layer, inputs, *args, **kwargs):
        a = accepts_input(layer, inputs)
        if a is None:
            return None
        z = depthwise_forward(layer, a, layer.kernel)
        if layer.use_bias:
            z = z + tf.reshape(layer.bias, [1] * (layer.rank + 1) + [-1])
        out = z if layer.activation is None else layer.activation(z)
        return out, a, z

    def variables(self, layer) -> List[tf.Variable]:
        return [v for v in (layer.kernel, layer.bias) if v is not None and v.trainable]

    def per_example_gradients(self, layer, calls):
        kernel_grads: List[tf.Tensor] = []
        bias_grads: List[tf.Tensor] = []
        for a, g in calls:
            if layer.kernel.trainable:
                kernel_grads.append(per_example_depthwise_gradients(
                    layer, a, g, layer.kernel_size, layer.depth_multiplier))
            if layer.use_bias and layer.bias.trainable:
                bias_grads.append(spatial_sum(g))
        grads: Dict[int, tf.Tensor] = {}
        if kernel_grads:
            grads[var_key(layer.kernel)] = tf.add_n(kernel_grads)
        if bias_grads:
            grads[var_key(layer.bias)] = tf.add_n(bias_grads)
        return grads
