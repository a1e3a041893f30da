"""The QDQ lowering of a plan: the fp32 graph with FakeQuant wherever the int8 graph rounds.

Every weight is replaced by the value its int8 codes stand for (per channel for convolutions, per tensor
for matmuls, without the pair-safe scaling) and an asymmetric 8-bit FakeQuant (TFLite's scheme) is put on
every tensor the int8 graph rounds, with the calibrated ranges. Each unit's quantizer declares its points
(``OpQuantizer.qdq``). It is exact 8-bit arithmetic with no kernel effects: the reference the int8 kernels
are held to (`benchmarks/fer_gap.py`, the random-architecture tests) and the form other runtimes read.
"""

from __future__ import annotations

import copy

import numpy as np
from tensorflow.core.framework import node_def_pb2
from tensorflow.python.framework import tensor_util

from kquant.graphdef import const_value, nodes_by_name, output_channels
from kquant.quantization.plan import tensors_read_as_int8
from kquant.quantization.weights import dequantized_weights, quantize_weights


class QdqPoints:
    """Where the int8 graph rounds, as the quantizers declare it; ``graph_def()`` builds the QDQ graph."""

    def __init__(self, fp32, units, ranges):
        self.fp32 = fp32
        self.ranges = dict(ranges)
        self.read_as_int8 = tensors_read_as_int8(units)
        self.weights: dict[str, np.ndarray] = {}   # Const node -> its exact int8 values
        self.rounded: list[str] = []               # outputs the int8 ops round
        self.entering: list[str] = []              # tensors entering int8 from fp32
        self.grid: set[str] = set()                # outputs holding their input's codes (no new rounding)
        self._nodes = nodes_by_name(fp32.graph_def)
        for unit in units:
            unit.quantizer.qdq(unit, self)

    def round_weights(self, unit, *, per_channel: bool) -> None:
        weights = const_value(self._nodes[unit.weights])
        channels = output_channels(self._nodes[unit.anchor], weights.shape)
        q, w_max = quantize_weights(weights, channels, per_channel)
        exact = dequantized_weights(q, w_max, channels)
        self.weights[unit.weights] = exact.reshape(weights.shape).astype(np.float32)

    def round(self, tensor: str, tensor_range: tuple | None = None) -> None:
        """``tensor`` is rounded onto its range (or ``tensor_range``, e.g. a concat's union of its inputs')."""
        self.rounded.append(tensor)
        self.grid.add(tensor)
        if tensor_range is not None:
            self.ranges[tensor] = tensor_range

    def enter(self, tensor: str) -> None:
        """``tensor`` enters int8 here: it is rounded unless it already holds codes."""
        self.entering.append(tensor)

    def on_grid(self, tensor: str) -> None:
        """``tensor`` holds its input's codes: entering a unit from it rounds nothing new."""
        self.grid.add(tensor)

    def graph_def(self):
        graph_def = copy.deepcopy(self.fp32.graph_def)
        nodes = nodes_by_name(graph_def)
        for name, exact in self.weights.items():
            nodes[name].attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(exact))
        points = self.rounded + [t for t in self.entering if t not in self.grid]
        for tensor in dict.fromkeys(points):
            low, high = self.ranges[tensor]
            name = tensor.split(":")[0]
            fake = node_def_pb2.NodeDef(name=f"{name}/fake_quant", op="FakeQuantWithMinMaxArgs", input=[name])
            fake.attr["min"].f, fake.attr["max"].f, fake.attr["num_bits"].i = min(low, 0.0), max(high, 0.0), 8
            for node in graph_def.node:
                node.input[:] = [fake.name if i in (name, tensor) else i for i in node.input]
            graph_def.node.append(fake)
        return graph_def


def qdq_graph_def(fp32, units, ranges):
    """``fp32`` (a FrozenGraph) with int8-rounded weights and FakeQuant on every tensor ``units`` (as the rewrite
    emitted them: ``QuantizationResult.units``) round."""
    return QdqPoints(fp32, units, ranges).graph_def()
