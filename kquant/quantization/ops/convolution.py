"""Conv2D -> ``_FusedQuantizedConv2D`` (bias, Relu, a residual sum and the requantize fused) or the public
``QuantizedConv2DWithBias[AndRelu]AndRequantize``; weights per output channel."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from kquant.graphdef import output_channels
from kquant.quantization import nodes as N
from kquant.quantization.ops import weighted
from kquant.quantization.ops.base import Unit
from kquant.quantization.ops.residual import sum_fusable
from kquant.quantization.weights import dequantized_weights, quantize_weights

CONV_ATTRS = ("strides", "padding", "dilations", "explicit_paddings", "data_format")
PUBLIC_CONV_ATTRS = ("strides", "padding", "dilations")


class Convolution(weighted.WeightedQuantizer):
    family = "convolution"
    op_types = ("Conv2D",)
    fused_op = "_FusedQuantizedConv2D"
    stem_candidate = True
    sums_pairs = True  # sums products over input-channel pairs, which oneDNN forms in int16 without VNNI
    patterns = weighted.chain_patterns("Conv2D", "Relu|Relu6", residual=True)

    def supported(self, unit: Unit, lowering) -> bool:
        if self._grouped(unit, lowering):
            return False
        return lowering.options.kernels == "onednn" or self._public_supported(unit, lowering)

    def _public_supported(self, unit: Unit, lowering) -> bool:
        """The public ops compute wrong results for signed inputs (MIN_FIRST or qint8) and take no explicit padding."""
        return lowering.unsigned(unit.data_input) and self.anchor(unit, lowering).attr["padding"].s != b"EXPLICIT"

    def _grouped(self, unit: Unit, lowering) -> bool:
        """Whether ``unit`` is a grouped Conv2D (its filter reads fewer channels than its input has, as a grouped
        Keras Conv2D inlined from its function call): oneDNN has no int8 kernel for it, so it stays fp32."""
        anchor = lowering.nodes[unit.anchor]
        shape = lowering.shapes.of(unit.data_input)
        channels = shape[1 if anchor.attr["data_format"].s == b"NCHW" else -1] if shape else None
        return channels is not None and channels != weighted.weights_of(unit, lowering).shape[2]

    def fuses_sum(self, unit: Unit, lowering) -> bool:
        return sum_fusable(unit, lowering)

    def reads_shifted(self, unit: Unit, lowering) -> bool:
        """The kernel's zero padding would stand for ``low``, so a convolution that pads keeps a signed input
        (padding the codes with TF's PadV2 was tried: on fer it cost 4 ms per batch of 32, more than the int8
        convolutions saved)."""
        return not _pads(self.anchor(unit, lowering), weighted.weights_of(unit, lowering).shape)

    def anchor(self, unit: Unit, lowering):
        """The conv node the int8 op computes."""
        return lowering.nodes[unit.anchor]

    def lower(self, unit: Unit, lowering):
        anchor = self.anchor(unit, lowering)
        x = lowering.input(unit.data_input, unit)
        weights = weighted.weights_of(unit, lowering)
        channels = output_channels(anchor, weights.shape)
        q_weights, w_max = quantize_weights(weights, channels, lowering.options.per_channel,
                                            pair_safe=lowering.pair_safe(x) and self.sums_pairs)
        lo, hi, dtype, out_shift = weighted.output_range(unit, lowering)
        base, k = f"{unit.output}_int8", lowering.const_scope()
        bias = weighted.bias(unit, lowering, channels) - (out_shift[0] if out_shift else 0.0)  # shifted codes hold x - low
        conv_attrs = {key: anchor.attr[key] for key in CONV_ATTRS if key in anchor.attr}
        filter_nodes = (_strided_filter(k, q_weights, conv_attrs)
                        if lowering.options.kernels == "onednn" and _strided_1x1(anchor, weights.shape)
                        else [N.const(f"{k}/filter", q_weights, tf.qint8)])
        x_min, x_max = x.min, x.max
        if x.shift:  # the kernel reads x - low in [0, high - low]; add back low * (the weights it uses) per channel
            x_min, x_max = f"{k}/min_input", f"{k}/max_input"
            lowering.emit(N.const(x_min, np.float32(0.0)), N.const(x_max, np.float32(x.shift[1] - x.shift[0])))
            bias = bias + x.shift[0] * dequantized_weights(q_weights, w_max, channels).sum(axis=0)
        # one range constant serves as min and max: the kernels scale by max(|min|, |max|) per channel
        inputs = [x.tensor, f"{k}/filter", f"{k}/bias", x_min, x_max, f"{k}/filter_range", f"{k}/filter_range",
                  f"{k}/min_output", f"{k}/max_output"]
        if unit.summand:
            summand = lowering.input(unit.summand, None)
            s_min, s_max = summand.min, summand.max
            if summand.shift:  # the kernel adds the codes as unsigned data, x - low: add low back
                s_min, s_max = f"{k}/min_summand", f"{k}/max_summand"
                lowering.emit(N.const(s_min, np.float32(0.0)), N.const(s_max, np.float32(summand.shift[1] - summand.shift[0])))
                bias = bias + summand.shift[0]
            op = _fused_conv_with_sum(base, self.fused_op, inputs[:3] + [summand.tensor] + inputs[3:7] + [s_min, s_max]
                                      + inputs[7:], input_dtype=x.dtype, summand_dtype=summand.dtype,
                                      output_dtype=dtype, conv_attrs=conv_attrs)
        elif lowering.options.kernels == "public":
            op = self._public_op(base, bool(unit.activation), inputs, dtype,
                                 {key: conv_attrs[key] for key in PUBLIC_CONV_ATTRS if key in conv_attrs})
        else:
            op = _fused_conv(base, self.fused_op, inputs, input_dtype=x.dtype, output_dtype=dtype, conv_attrs=conv_attrs,
                             fused_ops=["BiasAdd"] + (["Relu"] if unit.activation else []) + ["Requantize"])
        lowering.emit(*filter_nodes, N.const(f"{k}/bias", bias.astype(np.float32)), N.const(f"{k}/filter_range", w_max),
                      N.const(f"{k}/min_output", np.float32(lo)), N.const(f"{k}/max_output", np.float32(hi)), op)
        return lowering.shifted_output(base, k, dtype, out_shift)

    def _public_op(self, name, relu: bool, inputs, output_dtype, conv_attrs):
        """``QuantizedConv2DWithBias[AndRelu]AndRequantize`` (quint8 input only)."""
        return _with_attrs(N.make_node(f"QuantizedConv2DWithBias{'AndRelu' if relu else ''}AndRequantize", name, inputs,
                                       Tinput=tf.quint8, Tfilter=tf.qint8, Tbias=tf.float32, out_type=output_dtype),
                           conv_attrs)

    def qdq(self, unit: Unit, points) -> None:
        points.round_weights(unit, per_channel=True, sums_pairs=self.sums_pairs)
        points.round(unit.output_tensor)
        points.enter(unit.data_input)
        if unit.summand:
            points.enter(unit.summand)


def _fused_conv(name, op, inputs, *, input_dtype, output_dtype, fused_ops, conv_attrs):
    """``_FusedQuantizedConv2D`` / ``_FusedQuantizedDepthwiseConv2D``: inputs x, filter, bias, min_x, max_x,
    min_filter, max_filter, min_out, max_out; the trailing ``Requantize`` gives a quint8/qint8 output."""
    return _with_attrs(N.make_node(
        op, name, inputs,
        Thost_inputs=[input_dtype, tf.qint8, tf.float32] + [tf.float32] * (len(inputs) - 3),
        Thost_outputs=[output_dtype, tf.float32, tf.float32], Tdevice_inputs=[], Tdevice_outputs=[],
        Tinput=input_dtype, Tfilter=tf.qint8, Tbias=tf.float32, Tsummand=output_dtype, out_type=output_dtype,
        fused_ops=list(fused_ops)), conv_attrs)


def _fused_conv_with_sum(name, op, inputs, *, input_dtype, summand_dtype, output_dtype, conv_attrs):
    """``_FusedQuantizedConv2D`` adding an int8 summand before its Relu (oneDNN's sum post-op): inputs x, filter,
    bias, summand, min_x, max_x, min_filter, max_filter, min_summand, max_summand, min_out, max_out."""
    return _with_attrs(N.make_node(
        op, name, inputs,
        Thost_inputs=[input_dtype, tf.qint8, tf.float32, summand_dtype] + [tf.float32] * 8,
        Thost_outputs=[output_dtype, tf.float32, tf.float32], Tdevice_inputs=[], Tdevice_outputs=[],
        Tinput=input_dtype, Tfilter=tf.qint8, Tbias=tf.float32, Tsummand=summand_dtype, out_type=output_dtype,
        fused_ops=["BiasAdd", "Sum", "Relu", "Requantize"]), conv_attrs)


def _with_attrs(node, attrs: dict):
    for key, value in attrs.items():
        node.attr[key].CopyFrom(value)
    return node


def _pads(conv, kernel_shape) -> bool:
    """Whether ``conv`` pads its input with zeros: SAME with a kernel larger than 1x1, or explicit pads."""
    padding = conv.attr["padding"].s
    if padding == b"EXPLICIT":
        return any(conv.attr["explicit_paddings"].list.i)
    return padding == b"SAME" and tuple(kernel_shape[:2]) != (1, 1)


def _strided_1x1(conv, kernel_shape) -> bool:
    strides = list(conv.attr["strides"].list.i)
    return (conv.op == "Conv2D" and tuple(kernel_shape[:2]) == (1, 1) and conv.attr["padding"].s in (b"SAME", b"VALID")
            and conv.attr["data_format"].s in (b"", b"NHWC") and strides[1:3] != [1, 1])


def _strided_filter(scope: str, q_weights: np.ndarray, conv_attrs: dict) -> list:
    """A strided 1x1 conv's filter as an s x s kernel with the weights in its first tap; the conv is padded by
    s - 1 at the end (``conv_attrs`` is updated), so its output size stays ceil(size / s) and the padded
    values meet only zero weights. The file keeps the 1x1 weights: the Pad is folded when the graph loads.

    oneDNN's strided int8 1x1 kernel (jit_uni_int8_1x1, which first copies the strided input to a
    scratchpad) gave different results on repeated runs of one batch here (fer's first residual
    branch, 60x60x8 input: up to 116 codes off in the second half of a batch of 100); the general int8
    conv kernel is stable.
    """
    strides = list(conv_attrs["strides"].list.i)
    conv_attrs["padding"] = N.attr_value("EXPLICIT")
    conv_attrs["explicit_paddings"] = N.attr_value([0, 0, 0, strides[1] - 1, 0, strides[2] - 1, 0, 0])
    pads = np.array([[0, strides[1] - 1], [0, strides[2] - 1], [0, 0], [0, 0]], np.int32)
    return [N.const(f"{scope}/filter_1x1", q_weights, tf.qint8), N.const(f"{scope}/filter_pads", pads),
            N.make_node("Pad", f"{scope}/filter", [f"{scope}/filter_1x1", f"{scope}/filter_pads"], T=tf.qint8,
                        Tpaddings=tf.int32)]
