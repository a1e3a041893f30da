"""Reshape (to a constant shape) of an unsigned int8 tensor -> ``QuantizedReshape``, which keeps its codes."""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from kquant.graphdef import node_name
from kquant.quantization import nodes as N
from kquant.quantization.ops.base import OpQuantizer, PlanGraph, Unit, pass_through_unit


class Reshape(OpQuantizer):
    family = "reshape"
    op_types = ("Reshape",)
    # attention's query, key and value projections, read by an fp32 Einsum: the MatMul before such a Reshape
    # dequantizes in its kernel instead, so the tensor skips a rounding and the graph a QuantizedReshape
    dropped_when_unread = True

    def match(self, node, graph: PlanGraph) -> Unit | None:
        shape = graph.index.by_name.get(node_name(node.input[1]))
        return pass_through_unit(self, node, graph) if shape is not None and shape.op == "Const" else None

    def supported(self, unit: Unit, lowering) -> bool:
        source = lowering.quantized.get(unit.data_input)
        return source is not None and source.dtype == tf.quint8  # no qint8 QuantizedReshape

    def reads_shifted(self, unit: Unit, lowering) -> bool:
        return lowering.can_shift(unit.output_tensor)

    def lower(self, unit: Unit, lowering):
        node = lowering.nodes[unit.anchor]
        x = lowering.input(unit.data_input, unit)
        base = f"{unit.output}_int8"
        lowering.emit(N.make_node("QuantizedReshape", base, [x.tensor, node.input[1], x.min, x.max], T=x.dtype,
                                  Tshape=tf.as_dtype(node.attr["Tshape"].type)))
        return dataclasses.replace(x, tensor=f"{base}:0", min=f"{base}:1", max=f"{base}:2")

    def qdq(self, unit: Unit, points) -> None:
        points.on_grid(unit.output_tensor)
