"""Conv1D/Conv2D/Conv3D: per-example kernel gradients from input patches.

The kernel gradient of a convolution is a "filter-gradient problem": for an input x
[B, *spatial, c_x] convolved with a kernel [*k, c_x, c_y] (strides, dilations, padding)
and the gradient y [B, *out_spatial, c_y] of its output, example b's kernel gradient is
sum_p patch_p(x[b]) y[b, p]^T over the output positions p. The module-level helpers solve
that problem for any rank (1-3) and several calls at once; the transposed convolutions
(conv_transpose.py) are the same problem with the roles of their input and output
gradient swapped.

Only kernels every CPU build has are used: Conv2DBackpropFilter / Conv3DBackpropFilterV2
without dilation, extract_patches, extract_volume_patches, depthwise filter gradients, and
for dilated kernels the gradient of tf.nn.convolution (space-to-batch around a plain
convolution), never the oneDNN-only dilated filter-gradient kernels.

Grouped convolutions (G groups, kernel [*k, c_x/G, c_y]: output channels
[g*c_y/G:(g+1)*c_y/G] see only input channels [g*c_x/G:(g+1)*c_x/G]) are G independent
filter-gradient problems: the helpers take `groups` and split the channel axes of the
patches and output gradients into [G, c/G], with the group axis batched in the einsums
(never a loop over groups or examples, and never a grouped filter-gradient kernel, which
plain-Eigen CPU builds lack).
"""

from __future__ import annotations

import itertools
import math
from typing import List, NamedTuple, Optional, Sequence, Tuple

import keras
import tensorflow as tf

from tfdp.training.rules.base import (LayerRule, flatten_positions, per_example_norm,
                                      position_sums, var_key)
from tfdp.training.rules.lora import LoraRule, last_axis_product, uses_lora
from tfdp.training.rules.registry import layer_rule

# Few input channels: a convolution with one-hot filters extracts the patches several times
# faster than extract_patches on CPU, and the batch folded into the channels gives every
# example's kernel gradient in one depthwise filter-gradient op.
NARROW_CHANNELS = 3


class ConvGeometry(NamedTuple):
    """A convolution's window: per-spatial-axis kernel size, strides, dilations; VALID/SAME."""

    kernel_size: Tuple[int, ...]
    strides: Tuple[int, ...]
    dilations: Tuple[int, ...]
    padding: str

    @property
    def rank(self) -> int:
        return len(self.kernel_size)

    @property
    def dilated(self) -> bool:
        return any(d != 1 for d in self.dilations)

    def with_leading_unit_axis(self) -> "ConvGeometry":
        """The rank-1 window as a rank-2 one over [B, 1, T, c] (the extra axis has size 1).

        The unit axis takes the same stride as the real one (its output has size 1 either
        way), so that ops requiring equal strides accept it.
        """
        return ConvGeometry((1,) + self.kernel_size, self.strides * 2, (1,) + self.dilations,
                            self.padding)


def _static_positions(y: tf.Tensor) -> Optional[int]:
    spatial = y.shape[1:-1]
    return None if None in spatial else math.prod(spatial)


def _one_hot_patches(geometry: ConvGeometry, x: tf.Tensor) -> tf.Tensor:
    """Patches as a convolution with one-hot filters: [B, *out, prod(k) * c_x]."""
    channels = x.shape[-1]
    width = math.prod(geometry.kernel_size) * channels
    one_hot = tf.reshape(tf.eye(width, dtype=x.dtype),
                         list(geometry.kernel_size) + [channels, width])
    return tf.nn.convolution(x, one_hot, strides=list(geometry.strides), padding=geometry.padding,
                             dilations=list(geometry.dilations))


def _sliced_patches(geometry: ConvGeometry, x: tf.Tensor) -> Optional[tf.Tensor]:
    """Patches from one strided slice per kernel offset (any rank; static spatial shape)."""
    spatial = x.shape[1:-1]
    if None in spatial:
        return None
    paddings, sizes = [[0, 0]], []
    for n, k, s, d in zip(spatial, geometry.kernel_size, geometry.strides, geometry.dilations):
        effective = (k - 1) * d + 1
        if geometry.padding == "SAME":
            out = -(-n // s)
            total = max((out - 1) * s + effective - n, 0)
            paddings.append([total // 2, total - total // 2])
        else:
            out = (n - effective) // s + 1
            paddings.append([0, 0])
        sizes.append(out)
    x = tf.pad(x, paddings + [[0, 0]])
    pieces = []
    for offset in itertools.product(*(range(k) for k in geometry.kernel_size)):
        window = tuple(slice(o * d, o * d + (out - 1) * s + 1, s) for o, d, s, out in
                       zip(offset, geometry.dilations, geometry.strides, sizes))
        pieces.append(x[(slice(None),) + window])
    return tf.concat(pieces, axis=-1) if len(pieces) > 1 else pieces[0]


def patches(geometry: ConvGeometry, x: tf.Tensor) -> tf.Tensor:
    """[B, positions, prod(k) * c_x]: x's patches in the kernel's row-major (*k, c_x) order.

    Few channels: a convolution with one-hot filters (several times faster than the patch
    ops on CPU). Stride 1 and a static shape: one slice per kernel offset (faster than
    extract_patches and extract_volume_patches, which has no dilation). Otherwise
    extract_patches / extract_volume_patches. All give the same values bit for bit
    (tests/training/rules/test_rule_conv.py checks it on both CPU backends).
    """
    if geometry.rank == 1:
        geometry, x = geometry.with_leading_unit_axis(), x[:, None]
    channels = x.shape[-1]
    result = None
    if channels is not None and channels <= NARROW_CHANNELS:
        result = _one_hot_patches(geometry, x)
    elif all(s == 1 for s in geometry.strides):
        result = _sliced_patches(geometry, x)
    if result is None:
        if geometry.rank == 2:
            result = tf.image.extract_patches(
                x,
                sizes=[1, *geometry.kernel_size, 1],
                strides=[1, *geometry.strides, 1],
                rates=[1, *geometry.dilations, 1],
                padding=geometry.padding,
            )
        elif not geometry.dilated:
            result = tf.extract_volume_patches(x, [1, *geometry.kernel_size, 1],
                                               [1, *geometry.strides, 1], geometry.padding)
        else:
            # A dilated volume of unknown spatial shape (Keras allows dilation with stride
            # 1 only): extract_volume_patches has no dilation.
            result = _one_hot_patches(geometry, x)
    return flatten_positions(result)


def _batch_as_channels_applies(geometry: ConvGeometry, x: tf.Tensor) -> bool:
    channels = x.shape[-1]
    if channels is None or channels > NARROW_CHANNELS or geometry.dilated:
        # The CPU depthwise filter gradient ignores dilations.
        return False
    if geometry.rank == 1:
        return True
    return geometry.rank == 2 and geometry.strides[0] == geometry.strides[1]


def _batch_as_channels_gradients(geometry: ConvGeometry, x: tf.Tensor, y: tf.Tensor,
                                  groups: int = 1) -> tf.Tensor:
    """[prod(k), B, c_x * c_y / G]: every example's kernel gradient from one depthwise op.

    The batch is folded into the channels ([1, *spatial, B*c_x]) and each example's output
    gradient is repeated for its input channels, so the depthwise filter gradient
    [*k, B*c_x, c_y] holds every example's kernel gradient. With G groups, input channel c
    is paired with its own group's c_y/G output channels only.
    """
    if geometry.rank == 1:
        geometry, x, y = geometry.with_leading_unit_axis(), x[:, None], y[:, None]
    shape, out_shape = tf.shape(x), tf.shape(y)
    batch, c_x, c_y = shape[0], x.shape[-1], y.shape[-1] // groups
    folded = tf.reshape(tf.transpose(x, [1, 2, 0, 3]), [1, shape[1], shape[2], batch * c_x])
    grouped = tf.reshape(y, [out_shape[0], out_shape[1], out_shape[2], groups, 1, c_y])
    repeated = tf.reshape(tf.tile(grouped, [1, 1, 1, 1, c_x // groups, 1]),
                          [out_shape[0], out_shape[1], out_shape[2], c_x, c_y])
    repeated = tf.reshape(tf.transpose(repeated, [1, 2, 0, 3, 4]),
                          [1, out_shape[1], out_shape[2], batch * c_x * c_y])
    kernel_h, kernel_w = geometry.kernel_size
    grads = tf.nn.depthwise_conv2d_backprop_filter(
        folded, tf.stack([kernel_h, kernel_w, batch * c_x, c_y]), repeated,
        strides=[1, *geometry.strides, 1], padding=geometry.padding,
    )
    return tf.reshape(grads, [kernel_h * kernel_w, batch, c_x * c_y])


def _stacked_patches(geometry: ConvGeometry, pairs: Sequence[Tuple[tf.Tensor, tf.Tensor]]):
    """Every call's patches and output gradients, positions of all calls on one axis."""
    xs = [patches(geometry, x) for x, _ in pairs]
    ys = [flatten_positions(y) for _, y in pairs]
    if len(pairs) == 1:
        return xs[0], ys[0]
    return tf.concat(xs, axis=1), tf.concat(ys, axis=1)


def _group_split(geometry: ConvGeometry, xs: tf.Tensor, ys: tf.Tensor, c_x: int, groups: int):
    """Patches [B, P, prod(k)*c_x] -> [B, P, prod(k), G, c_x/G]; gradients -> [B, P, G, c_y/G]."""
    shape = tf.shape(xs)
    xs = tf.reshape(xs, [shape[0], shape[1], math.prod(geometry.kernel_size), groups,
                         c_x // groups])
    ys = tf.reshape(ys, [shape[0], shape[1], groups, ys.shape[-1] // groups])
    return xs, ys


def per_example_kernel_gradients(geometry: ConvGeometry,
                                 pairs: Sequence[Tuple[tf.Tensor, tf.Tensor]],
                                 groups: int = 1) -> tf.Tensor:
    """[B, ...]: each example's kernel gradient summed over the pairs (x, y), in some layout.

    The layout is only fit for norms: [prod(k), B, c_x*c_y/G] transposed to batch first,
    [B, prod(k)*c_x, c_y], or with G > 1 groups [B, G, prod(k), c_x/G, c_y/G].
    """
    if all(_batch_as_channels_applies(geometry, x) for x, _ in pairs):
        grads = tf.add_n([_batch_as_channels_gradients(geometry, x, y, groups) for x, y in pairs])
        return tf.transpose(grads, [1, 0, 2])
    xs, ys = _stacked_patches(geometry, pairs)
    if groups == 1:
        return tf.matmul(xs, ys, transpose_a=True)
    xs, ys = _group_split(geometry, xs, ys, pairs[0][0].shape[-1], groups)
    return tf.einsum("bpkgc,bpgo->bgkco", xs, ys)


def kernel_norms(geometry: ConvGeometry, pairs: Sequence[Tuple[tf.Tensor, tf.Tensor]],
                 kind: str, groups: int = 1) -> tf.Tensor:
    """[B]: squared L2 ("l2") or L1 norm of each example's kernel gradient (summed over pairs).

    For L2 the ghost norm sum_{p,q} (x_p . x_q)(y_p . y_q) over all positions costs
    B*P^2*(k_in + k_out); materializing costs B*P*k_in*k_out: the cheaper one is taken from
    the static shapes. With G groups both are per group (k_in and k_out divided by G) and
    summed over the groups.
    """
    if kind == "l2":
        positions = [_static_positions(y) for _, y in pairs]
        k_in = math.prod(geometry.kernel_size) * (pairs[0][0].shape[-1] or 0) // groups
        k_out = pairs[0][1].shape[-1]
        if None not in positions and k_in and k_out is not None:
            k_out //= groups
            total = sum(positions)
            if total * (k_in + k_out) < k_in * k_out:
                xs, ys = _stacked_patches(geometry, pairs)
                if groups == 1:
                    gram = tf.matmul(xs, xs, transpose_b=True) * tf.matmul(ys, ys, transpose_b=True)
                    return tf.reduce_sum(gram, axis=[1, 2])
                xs, ys = _group_split(geometry, xs, ys, pairs[0][0].shape[-1], groups)
                gram = (tf.einsum("bpkgc,bqkgc->bgpq", xs, xs)
                        * tf.einsum("bpgo,bqgo->bgpq", ys, ys))
                return tf.reduce_sum(gram, axis=[1, 2, 3])
    return per_example_norm(per_example_kernel_gradients(geometry, pairs, groups), kind)


def filter_gradient(geometry: ConvGeometry, x: tf.Tensor, y: tf.Tensor,
                    kernel_shape: Sequence[int]) -> tf.Tensor:
    """The batch's kernel gradient sum_b grad_b, shape `kernel_shape` = (*k, c_x, c_y)."""
    kernel_shape = tuple(kernel_shape)
    if geometry.rank == 1:
        geometry, x, y = geometry.with_leading_unit_axis(), x[:, None], y[:, None]
        shape = (1,) + kernel_shape
    else:
        shape = kernel_shape
    if geometry.dilated:
        # The dilated filter-gradient kernels exist only in oneDNN and GPU builds; the
        # gradient of tf.nn.convolution (space-to-batch around a plain convolution) is the
        # same filter gradient on every backend.
        zero_kernel = tf.zeros(shape, x.dtype)
        with tf.GradientTape() as tape:
            tape.watch(zero_kernel)
            z = tf.nn.convolution(x, zero_kernel, strides=list(geometry.strides),
                                  padding=geometry.padding, dilations=list(geometry.dilations))
        kernel = tape.gradient(z, zero_kernel, output_gradients=y)
    elif geometry.rank == 2:
        kernel = tf.compat.v1.nn.conv2d_backprop_filter(
            x, shape, y, strides=[1, *geometry.strides, 1], padding=geometry.padding)
    else:
        kernel = tf.compat.v1.nn.conv3d_backprop_filter_v2(
            x, shape, y, strides=[1, *geometry.strides, 1], padding=geometry.padding)
    return tf.reshape(kernel, kernel_shape)


def scale_batch(t: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """t[b] * weights[b] for a [B, ...] tensor of static rank."""
    return t * tf.reshape(tf.cast(weights, t.dtype), [-1] + [1] * (t.shape.rank - 1))


def _method_owner(cls: type, name: str) -> Optional[type]:
    return next((c for c in cls.__mro__ if name in vars(c)), None)


def trainable_kernel_and_bias(layer) -> Tuple[Optional[tf.Variable], Optional[tf.Variable]]:
    kernel = layer.kernel if layer.kernel.trainable else None
    bias = layer.bias if layer.use_bias and layer.bias.trainable else None
    return kernel, bias


@layer_rule(keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
class ConvRule(LayerRule):
    """Conv1D/2D/3D (any groups, channels last): per-example kernel gradients from input patches."""

    def variant(self, layer):
        return CONV_LORA if uses_lora(layer) else self

    def supports_config(self, layer) -> bool:
        """Channels last and Keras's own convolution (an overridden convolution_op is another)."""
        return (super().supports(layer)
                and layer.data_format == "channels_last"
                and _method_owner(type(layer), "convolution_op")
                is _method_owner(keras.layers.Conv2D, "convolution_op"))

    def supports(self, layer):
        # LoRA makes the kernel a frozen variable plus factors: CONV_LORA measures those.
        return self.supports_config(layer) and not uses_lora(layer)

    def variables(self, layer):
        return [v for v in trainable_kernel_and_bias(layer) if v is not None]

    @staticmethod
    def geometry(layer) -> ConvGeometry:
        padding = "VALID" if layer.padding in ("valid", "causal") else "SAME"
        return ConvGeometry(tuple(layer.kernel_size), tuple(layer.strides),
                            tuple(layer.dilation_rate), padding)

    def forward(self, layer, inputs, *args, **kwargs):
        if isinstance(inputs, (tf.SparseTensor, tf.RaggedTensor)):
            return None
        a = tf.convert_to_tensor(inputs)
        padding = layer.padding.upper()
        if layer.padding == "causal":
            a = tf.pad(a, layer._compute_causal_padding())  # pylint: disable=protected-access
            padding = "VALID"
        if layer.groups == 1:
            z = tf.nn.convolution(a, layer.kernel, strides=list(layer.strides), padding=padding,
                                  dilations=list(layer.dilation_rate))
        else:
            if a.shape[-1] is None:
                return None
            # Keras's own grouped convolution (XLA-compiled on CPU, where tf.nn.convolution
            # has no grouped kernel): the same numbers as the layer's call.
            z = keras.ops.conv(a, tf.convert_to_tensor(layer.kernel), strides=list(layer.strides),
                               padding=padding.lower(), data_format="channels_last",
                               dilation_rate=list(layer.dilation_rate))
        if layer.use_bias:
            z = tf.nn.bias_add(z, layer.bias)
        return layer.activation(z), a, z

    def norms(self, layer, calls, kind):
        kernel, bias = trainable_kernel_and_bias(layer)
        terms: List[tf.Tensor] = []
        if kernel is not None:
            terms.append(kernel_norms(self.geometry(layer), list(calls), kind, layer.groups))
        if bias is not None:
            terms.append(per_example_norm(position_sums([g for _, g in calls]), kind))
        return tf.add_n(terms)

    def weighted_sums(self, layer, calls, weights):
        # sum_b w_b grad_b is the ordinary filter gradient of the reweighted output gradient.
        kernel, bias = trainable_kernel_and_bias(layer)
        weighted = [(a, scale_batch(g, weights)) for a, g in calls]
        sums = {}
        if kernel is not None:
            geometry = self.geometry(layer)
            if layer.groups == 1:
                sums[var_key(kernel)] = tf.add_n(
                    [filter_gradient(geometry, a, gw, kernel.shape) for a, gw in weighted])
            else:
                # The grouped filter gradient of all calls at once: positions concatenated.
                xs, ys = _stacked_patches(geometry, weighted)
                xs, ys = _group_split(geometry, xs, ys, weighted[0][0].shape[-1], layer.groups)
                sums[var_key(kernel)] = tf.reshape(tf.einsum("bpkgc,bpgo->kcgo", xs, ys),
                                                   kernel.shape)
        if bias is not None:
            sums[var_key(bias)] = tf.reduce_sum(position_sums([gw for _, gw in weighted]), axis=0)
        return sums


class ConvLoraRule(LoraRule, ConvRule):
    """Conv1D/2D/3D with Keras's LoRA (no groups): kernel W + s A B, A [*k, c_in, r], B [r, c_out].

    conv(x, A B) = conv(x, A) B, so A's problem is the plain filter-gradient problem at r
    output channels (g B^T) and B's an outer product of u = conv(x, A) and g over positions.
    With groups, A B mixes the groups' output channels differently: those take the fallback.
    """

    layer_types = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)

    def supports_lora(self, layer):
        return layer.groups == 1

    def rank_input(self, layer, a):
        # `a` is the captured input, already padded for causal convolutions.
        geometry = self.geometry(layer)
        return tf.nn.convolution(a, tf.cast(layer.lora_kernel_a, a.dtype),
                                 strides=list(geometry.strides), padding=geometry.padding,
                                 dilations=list(geometry.dilations))

    def rank_gradient(self, layer, a, g):
        return last_axis_product(g, layer.lora_kernel_b, transpose=True)

    def kernel_norms(self, layer, pairs, kind, low_rank):
        return kernel_norms(self.geometry(layer), list(pairs), kind)

    def kernel_sum(self, layer, pairs, weights, low_rank):
        shape = (layer.lora_kernel_a if low_rank else self.frozen(layer)).shape
        return tf.add_n([filter_gradient(self.geometry(layer), a, scale_batch(g, weights), shape)
                         for a, g in pairs])


CONV_LORA = ConvLoraRule()
