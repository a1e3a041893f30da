"""The QDQ lowering of a plan: the fp32 graph with FakeQuant wherever the int8 graph rounds.

Every weight is replaced by the value its int8 codes stand for (per channel for convolutions, per tensor
for matmuls, without the pair-safe scaling) and an asymmetric 8-bit FakeQuant (TFLite's scheme) is put on
every tensor the int8 graph rounds, with the calibrated ranges. Each unit's quantizer declares its points
(``OpQuantizer.qdq``). It is exact 8-bit arithmetic with no kernel effects: the reference the int8 kernels
are held to (`benchmarks/fer_gap.py`, the random-architecture tests).

The export form (``weights="fake_quant"``) keeps the fp32 weights and puts a symmetric narrow-range FakeQuant
on them instead, with the same scales, so a converter (OpenVINO, TFLite, tf2onnx) sees which weights are int8
and computes the same values: the interchange other runtimes read.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import node_def_pb2
from tensorflow.python.framework import tensor_util

from kquant.graphdef import const_node, const_value, node_name, nodes_by_name, output_channels, tensor_name
from kquant.quantization.nodes import make_node
from kquant.quantization.plan import tensors_read_as_int8
from kquant.quantization.weights import dequantized_weights, quantize_weights


WEIGHT_FORMS = ("rounded", "fake_quant")
WEIGHT_FAKE_QUANT = "/weights_fake_quant"  # the scope of a weight FakeQuant, under its unit's anchor


@dataclasses.dataclass(frozen=True)
class RoundedWeights:
    """A unit's weights as the int8 op holds them: ``q * w_max / 127`` per channel (the trailing ``channels``)."""

    anchor: str
    const: str
    values: np.ndarray   # the fp32 weights
    q: np.ndarray        # their int8 codes
    w_max: np.ndarray    # one scale, or one per channel
    channels: int

    def exact(self) -> np.ndarray:
        return dequantized_weights(self.q, self.w_max, self.channels).reshape(self.values.shape).astype(np.float32)


class QdqPoints:
    """Where the int8 graph rounds, as the quantizers declare it; ``graph_def()`` builds the QDQ graph.

    ``weights``: "rounded" puts the values the int8 weights stand for in the graph (the simulation),
    "fake_quant" keeps the fp32 weights behind a per-channel narrow-range FakeQuant (the export form).
    ``pair_safe`` scales weights that sum over input-channel pairs as ``quantize_weights`` does for CPUs without
    VNNI, whose u8 x s8 kernels (oneDNN's, in TF and in OpenVINO) sum each pair in int16; ``per_channel=False``
    gives every weight one scale (the int8 graph's ``per_channel`` option).
    """

    def __init__(self, fp32, units, ranges, weights: str = "rounded", pair_safe: bool = False, per_channel: bool = True):
        if weights not in WEIGHT_FORMS:
            raise ValueError(f"weights must be one of {WEIGHT_FORMS}, not {weights!r}")
        self.fp32 = fp32
        self.ranges = dict(ranges)
        self.weight_form = weights
        self.pair_safe = pair_safe
        self.per_channel = per_channel
        self.read_as_int8 = tensors_read_as_int8(units)
        self.weights: list[RoundedWeights] = []    # every unit's int8 weights
        self.rounded: list[str] = []               # outputs the int8 ops round
        self.entering: list[str] = []              # tensors entering int8 from fp32
        self.grid: set[str] = set()                # outputs holding their input's codes (no new rounding)
        self._nodes = nodes_by_name(fp32.graph_def)
        for unit in units:
            unit.quantizer.qdq(unit, self)

    def round_weights(self, unit, *, per_channel: bool, sums_pairs: bool) -> None:
        """``unit``'s weights are int8, one scale per output channel or per tensor; ``sums_pairs``: its kernel
        sums products over pairs of input channels (not a depthwise one)."""
        weights = const_value(self._nodes[unit.weights])
        channels = output_channels(self._nodes[unit.anchor], weights.shape)
        q, w_max = quantize_weights(weights, channels, per_channel and self.per_channel,
                                    pair_safe=self.pair_safe and sums_pairs)
        self.weights.append(RoundedWeights(unit.anchor, unit.weights, weights, q, w_max, channels))

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
        for weights in self.weights:
            if self.weight_form == "rounded":
                nodes[weights.const].attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(weights.exact()))
            else:
                anchor = nodes[weights.anchor]
                anchor.input[:] = [_weight_fake_quant(graph_def, weights) if node_name(i) == weights.const else i
                                   for i in anchor.input]
        points = list(dict.fromkeys(self.rounded + [t for t in self.entering if t not in self.grid]))
        rounded, outputs = set(points), {node_name(t) for t in self.fp32.output_names}
        for tensor in points:
            low, high = self.ranges[tensor]
            name = tensor.split(":")[0]
            exported = self.weight_form == "fake_quant" and name not in outputs
            slots = _concat_input_slots(nodes, name, rounded) if exported else []
            for slot in slots:  # the same values, from FakeQuants on the concat's inputs
                fake = _fake_quant(f"{name}/input_{slot}/fake_quant", nodes[name].input[slot], low, high)
                nodes[name].input[slot] = fake.name
                graph_def.node.append(fake)
            if not slots:
                fake = _fake_quant(f"{name}/fake_quant", name, low, high)
                for node in graph_def.node:
                    node.input[:] = [fake.name if i in (name, tensor) else i for i in node.input]
                graph_def.node.append(fake)
        return graph_def


def export_points(fp32, units, ranges, options) -> QdqPoints:
    """The export lowering of a plan: ``units`` as the rewrite emitted them, their ``ranges``, weights behind FakeQuant
    with the scales the int8 kernels use (``options``: a RewriteOptions; pair-safe where the int8 graph's are)."""
    return QdqPoints(fp32, units, ranges, weights="fake_quant", pair_safe=options.pair_safe_weights,
                     per_channel=options.per_channel)


def qdq_graph_def(fp32, units, ranges, weights: str = "rounded"):
    """``fp32`` (a FrozenGraph) with int8 weights (``weights``: rounded constants, or fp32 ones behind a FakeQuant)
    and FakeQuant on every tensor ``units`` (as the rewrite emitted them: ``QuantizationResult.units``) round."""
    return QdqPoints(fp32, units, ranges, weights).graph_def()


def _fake_quant(name: str, tensor: str, low: float, high: float):
    """An asymmetric 8-bit FakeQuant of ``tensor`` onto [low, high] (widened to hold 0, as TF's nudging needs)."""
    fake = node_def_pb2.NodeDef(name=name, op="FakeQuantWithMinMaxArgs", input=[tensor])
    fake.attr["min"].f, fake.attr["max"].f, fake.attr["num_bits"].i = min(low, 0.0), max(high, 0.0), 8
    return fake


def _concat_input_slots(nodes, name: str, points) -> list[int]:
    """The input slots of ``name`` when it is a concat none of whose inputs is rounded elsewhere (``points``), else
    []. A FakeQuant on each input, with the output's range, gives the same values as one on the output; OpenVINO
    would move it there itself, but only from the graph can it see that two concats round a shared input alike and
    run that FakeQuant once (Wide & Deep's numeric columns)."""
    concat = nodes.get(name)
    if concat is None or concat.op != "ConcatV2" or any(tensor_name(t) in points for t in concat.input):
        return []
    return list(range(len(concat.input) - 1))


def _weight_fake_quant(graph_def, weights: RoundedWeights) -> str:
    """Append a symmetric narrow-range FakeQuant ([-127, 127] codes of ``w_max / 127``) of ``weights``; its name.

    TF's per-channel FakeQuant reads the channels on the last axis; weights whose channels span the trailing axes
    (a depthwise filter [h, w, in, multiplier]) are reshaped to [taps, channels] around it.
    """
    scope = weights.anchor + WEIGHT_FAKE_QUANT
    shape = weights.values.shape
    per_channel = weights.w_max.size > 1
    source = weights.const
    reshaped = per_channel and shape[-1] != weights.channels
    if reshaped:
        source = _reshape(graph_def, f"{scope}/to_channels", source, (-1, weights.channels))
    w_max = weights.w_max.astype(np.float32).reshape(-1 if per_channel else ())
    op = "FakeQuantWithMinMaxVarsPerChannel" if per_channel else "FakeQuantWithMinMaxVars"
    graph_def.node.extend([const_node(f"{scope}/min", -w_max), const_node(f"{scope}/max", w_max),
                           make_node(op, scope, [source, f"{scope}/min", f"{scope}/max"], num_bits=8, narrow_range=True)])
    return _reshape(graph_def, f"{scope}/to_filter", scope, shape) if reshaped else scope


def _reshape(graph_def, name, tensor, shape) -> str:
    graph_def.node.extend([const_node(f"{name}/shape", np.asarray(shape, np.int32)),
                           make_node("Reshape", name, [tensor, f"{name}/shape"], T=tf.float32, Tshape=tf.int32)])
    return name
