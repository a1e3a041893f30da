"""ConcatV2 along a constant axis, with at least one int8 input -> ``QuantizedConcat`` of unsigned inputs."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from kquant.graphdef import const_value, node_name, tensor_name
from kquant.quantization import nodes as N
from kquant.quantization.encoding import QTensor
from kquant.quantization.ops.base import OpQuantizer, PlanGraph, Unit


class Concat(OpQuantizer):
    family = "concat"
    op_types = ("ConcatV2",)

    def match(self, node, graph: PlanGraph) -> Unit | None:
        *values, axis = node.input
        axis_node = graph.index.by_name.get(node_name(axis))
        if len(values) < 2 or axis_node is None or axis_node.op != "Const" \
                or not any(tensor_name(v) in graph.produced for v in values):
            return None
        return Unit(self, node.name, (node.name,), tensor_name(values[0]), node.name,
                    more_inputs=tuple(tensor_name(v) for v in values[1:]))

    def supported(self, unit: Unit, lowering) -> bool:
        """QuantizedConcat requantizes its inputs to the union of their ranges, read as min + code * step: all
        unsigned (an fp32 input gets a quint8 QuantizeV2)."""
        sources = [lowering.quantized.get(t) for t in unit.data_inputs]
        unsigned = all(lowering.ranges[t][0] >= 0 if s is None else s.dtype == tf.quint8 and s.shift is None
                       for t, s in zip(unit.data_inputs, sources))
        return unsigned and any(sources) and self._axis(unit, lowering) is not None

    def lower(self, unit: Unit, lowering) -> QTensor:
        """Its output range is the union of its inputs' (here [0, max])."""
        sources = [lowering.input(t, unit) for t in unit.data_inputs]
        base, k = f"{unit.output}_int8", lowering.const_scope()
        lowering.emit(
            N.const(f"{k}/axis", np.int32(self._axis(unit, lowering))),
            N.make_node("QuantizedConcat", base, [f"{k}/axis", *(s.tensor for s in sources), *(s.min for s in sources),
                                                  *(s.max for s in sources)], N=len(sources), T=tf.quint8))
        return QTensor(f"{base}:0", f"{base}:1", f"{base}:2", tf.quint8)

    def _axis(self, unit: Unit, lowering) -> int | None:
        """The axis counted from the front (QuantizedConcat takes no negative one); None if the rank is unknown."""
        axis = int(const_value(lowering.nodes[node_name(lowering.nodes[unit.anchor].input[-1])]))
        if axis >= 0:
            return axis
        shape = lowering.shapes.of(unit.output_tensor)
        return None if shape is None else axis + len(shape)

    def qdq(self, unit: Unit, points) -> None:
        for tensor in unit.data_inputs:
            points.enter(tensor)
        points.round(unit.output_tensor, (0.0, max(points.ranges[t][1] for t in unit.data_inputs)))
