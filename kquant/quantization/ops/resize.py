"""ResizeBilinear of an unsigned int8 tensor -> ``QuantizedResizeBilinear``, which interpolates its codes in its range."""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from kquant.graphdef import node_name
from kquant.quantization import nodes as N
from kquant.quantization.ops.base import OpQuantizer, PlanGraph, Unit, pass_through_unit


class ResizeBilinear(OpQuantizer):
    family = "resize"
    op_types = ("ResizeBilinear",)

    def match(self, node, graph: PlanGraph) -> Unit | None:
        size = graph.index.by_name.get(node_name(node.input[1]))
        return pass_through_unit(self, node, graph) if size is not None and size.op == "Const" else None

    def supported(self, unit: Unit, lowering) -> bool:
        source = lowering.quantized.get(unit.data_input)
        return source is not None and source.dtype == tf.quint8  # the kernel takes quint8, not qint8

    def reads_shifted(self, unit: Unit, lowering) -> bool:
        return lowering.can_shift(unit.output_tensor)  # interpolating codes of x - low gives codes of the result - low

    def lower(self, unit: Unit, lowering):
        node = lowering.nodes[unit.anchor]
        x = lowering.input(unit.data_input, unit)
        base = f"{unit.output}_int8"
        op = N.make_node("QuantizedResizeBilinear", base, [x.tensor, node.input[1], x.min, x.max], T=x.dtype)
        for key in ("align_corners", "half_pixel_centers"):
            op.attr[key].CopyFrom(node.attr[key])
        lowering.emit(op)
        return dataclasses.replace(x, tensor=f"{base}:0", min=f"{base}:1", max=f"{base}:2")

    def qdq(self, unit: Unit, points) -> None:
        points.round(unit.output_tensor, points.ranges[unit.data_input])  # rounded back onto its input's range
