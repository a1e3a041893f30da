"""DepthwiseConv2dNative -> ``_FusedQuantizedDepthwiseConv2D`` or the public
``QuantizedDepthwiseConv2DWithBiasAndReluAndRequantize``; a zero Pad before it becomes the int8 op's explicit padding."""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from kquant.graphdef import const_value, node_name, tensor_name
from kquant.quantization import nodes as N
from kquant.quantization.ops import weighted
from kquant.quantization.ops.base import PlanGraph, Unit
from kquant.quantization.ops.convolution import Convolution, _with_attrs


class DepthwiseConvolution(Convolution):
    family = "depthwise"
    op_types = ("DepthwiseConv2dNative",)
    fused_op = "_FusedQuantizedDepthwiseConv2D"
    sums_pairs = False  # one input channel per output channel
    patterns = weighted.chain_patterns("DepthwiseConv2dNative", "Relu|Relu6", residual=True)

    def match(self, node, graph: PlanGraph) -> Unit | None:
        unit = super().match(node, graph)
        pad = _zero_spatial_pad(node, graph.index) if unit is not None else None
        if pad is None:
            return unit
        return dataclasses.replace(unit, nodes=(unit.anchor, pad.name, *unit.nodes[1:]),
                                   data_input=tensor_name(pad.input[0]), pad=pad.name)

    def anchor(self, unit: Unit, lowering):
        """The conv, with the Pad before it (if the unit took one) as its explicit padding."""
        conv = lowering.nodes[unit.anchor]
        if not unit.pad:
            return conv
        padded = type(conv)()
        padded.CopyFrom(conv)
        padded.attr["padding"].s = b"EXPLICIT"
        paddings = lowering.nodes[node_name(lowering.nodes[unit.pad].input[1])]
        padded.attr["explicit_paddings"].list.i[:] = [int(v) for v in const_value(paddings).reshape(-1)]
        return padded

    def _grouped(self, unit: Unit, lowering) -> bool:
        return False

    def _public_supported(self, unit: Unit, lowering) -> bool:
        """The public depthwise op always fuses a Relu."""
        return bool(unit.activation) and super()._public_supported(unit, lowering)

    def fuses_sum(self, unit: Unit, lowering) -> bool:
        return False  # no int8 depthwise kernel takes a summand

    def _public_op(self, name, relu: bool, inputs, output_dtype, conv_attrs):
        return _with_attrs(N.make_node("QuantizedDepthwiseConv2DWithBiasAndReluAndRequantize", name, inputs,
                                       Tinput=tf.quint8, Tfilter=tf.qint8, Tbias=tf.float32, out_type=output_dtype),
                           conv_attrs)


def _zero_spatial_pad(conv, index):
    """The Pad that only ``conv`` (VALID, NHWC) reads, if it pads the height and width with zeros: the public
    DepthwiseConv2dNative keeps it (see mkl_fuse_pad_and_conv), the int8 op takes it as explicit padding."""
    pad = index.by_name.get(node_name(conv.input[0]))
    if pad is None or pad.op != "Pad" or index.only_reader(pad.name) is not conv or conv.attr["padding"].s != b"VALID" \
            or conv.attr["data_format"].s not in (b"", b"NHWC") or len(index.data_inputs(pad)) != len(pad.input):
        return None
    paddings = index.by_name.get(node_name(pad.input[1]))
    if paddings is None or paddings.op != "Const":
        return None
    value = const_value(paddings)
    if value.shape != (4, 2) or (value < 0).any() or value[0].any() or value[3].any():
        return None
    return pad
