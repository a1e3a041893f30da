"""MaxPool and AvgPool on an int8 tensor -> ``QuantizedMaxPool`` / ``QuantizedAvgPool``, which keep its encoding."""

from __future__ import annotations

import dataclasses

from kquant.quantization import nodes as N
from kquant.quantization.ops.base import OpQuantizer, PlanGraph, Unit, pass_through_unit


class MaxPool(OpQuantizer):
    """Picks input codes: the output is on the input's grid."""

    family = "max pool"
    op_types = ("MaxPool",)

    def match(self, node, graph: PlanGraph) -> Unit | None:
        return pass_through_unit(self, node, graph)

    def supported(self, unit: Unit, lowering) -> bool:
        return unit.data_input in lowering.quantized  # a pool only continues an int8 island

    def reads_shifted(self, unit: Unit, lowering) -> bool:
        return lowering.can_shift(unit.output_tensor)  # the codes pass on: its readers decide

    def lower(self, unit: Unit, lowering):
        node = lowering.nodes[unit.anchor]
        x = lowering.input(unit.data_input, unit)
        base = f"{unit.output}_int8"
        op = N.make_node(f"Quantized{node.op}", base, [x.tensor, x.min, x.max], T=x.dtype)
        for key in ("ksize", "strides", "padding"):
            op.attr[key].CopyFrom(node.attr[key])
        lowering.emit(op)
        return dataclasses.replace(x, tensor=f"{base}:0", min=f"{base}:1", max=f"{base}:2")  # a shift carries over

    def qdq(self, unit: Unit, points) -> None:
        points.on_grid(unit.output_tensor)


class AvgPool(MaxPool):
    """Averages codes, rounded back onto the input's range (the QDQ graph rounds it only where it enters a weighted op)."""

    family = "average pool"
    op_types = ("AvgPool",)

    def qdq(self, unit: Unit, points) -> None:
        pass
