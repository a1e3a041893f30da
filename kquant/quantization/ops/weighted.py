"""The chain a weighted op (convolution, matmul) claims: op -> bias -> residual Add -> activation, each optional.

Also what their lowerings share: the requantized output range, the bias, and the weights' own constants.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from kquant.graphdef import const_shape, const_value, is_control_input, node_name, output_channels, tensor_name
from kquant.quantization.encoding import qint8_bound, zero_exact
from kquant.quantization.ops.base import NON_NEGATIVE_ACTIVATIONS, OpQuantizer, PlanGraph, Unit, claim_chain
from kquant.quantization.ops.residual import residual_sum
from kquant.quantization.ranges import MIN_RANGE_WIDTH
from kquant.transforms.pattern import P

BIAS_OPS = "BiasAdd|Add|AddV2"


def chain_patterns(anchor_ops: str, activations: str, residual: bool) -> list[P]:
    """Every form of the chain, longest first."""
    core = P(anchor_ops, "anchor", P("*", "x"), P("Const", "weights"))
    bodies = [P(BIAS_OPS, "bias_add", core, P("Const", "bias")), core]
    if residual:
        bodies = [residual_sum(body) for body in bodies] + bodies
    return [P(activations, "activation", body) for body in bodies] + bodies


class WeightedQuantizer(OpQuantizer):
    """A Conv2D / DepthwiseConv2dNative / MatMul with a constant weight and what it fuses after it."""

    weighted = True
    patterns: list = []

    def match(self, node, graph: PlanGraph) -> Unit | None:
        if any(is_control_input(i) for i in node.input) or not self.accepts_anchor(node):
            return None
        index = graph.index
        match = claim_chain(self.patterns, node, index, lambda m: self._consistent(m, index))
        if match is None:
            return None
        found = match.nodes
        chain = [name for name in (node.name, *(found[k].name for k in ("bias_add", "sum", "activation") if k in found))]
        pre_sum = (found.get("bias_add") or node).name if "sum" in found else ""
        return Unit(self, node.name, tuple(chain), tensor_name(match.tensors["x"]), match.root.name,
                    found["weights"].name, found["bias"].name if "bias" in found else "",
                    found["activation"].op if "activation" in found else "",
                    tensor_name(match.tensors["summand"]) if "sum" in found else "", pre_sum)

    def accepts_anchor(self, node) -> bool:
        return True

    def ranges_needed(self, unit: Unit) -> set:
        needed = {unit.output_tensor, unit.data_input}
        return needed | ({unit.summand, f"{unit.pre_sum}:0"} if unit.summand else set())

    def _consistent(self, match, index) -> bool:
        """The bias is one value per output channel; a residual Add's other input is a computed tensor."""
        found = match.nodes
        if "bias" in found and const_shape(found["bias"]) != (output_channels(found["anchor"], const_shape(found["weights"])),):
            return False
        if "sum" in found:
            summand = index.by_name.get(node_name(match.tensors["summand"]))
            pre_sum = found.get("bias_add") or found["anchor"]
            return (len(found["sum"].input) == 2 and summand is not None and summand.op != "Const"
                    and summand is not pre_sum)
        return True


def output_range(unit: Unit, lowering) -> tuple[float, float, tf.DType, tuple | None]:
    """(min, max, dtype, shift) of a requantized output: quint8 [0, M] when non-negative; else, when its
    readers allow, quint8 codes of x - low in [0, high - low] (``shift`` = (low, high)); else qint8 [-M, M].

    A residual sum without an activation is fused only when its output can be shifted: the kernel computes
    Relu(conv + summand - low), which is x - low wherever x is in range (oneDNN fuses a sum only with an
    activation after it). A linear output is shifted through its bias; one after a signed activation (a
    MatMul's Tanh, Elu or LeakyRelu) by the kernel's MIN_FIRST requantize (see ``matmul``)."""
    lo, hi = lowering.ranges[unit.output_tensor]
    if unit.activation == "Relu6":
        hi = min(hi, 6.0)  # Relu6 is Relu with the quantized range capped at 6
    if unit.activation in NON_NEGATIVE_ACTIVATIONS or lo >= 0:
        return 0.0, max(hi, MIN_RANGE_WIDTH), tf.quint8, None
    if lowering.can_shift(unit.output_tensor):
        shift = zero_exact(lo, hi)
        return 0.0, shift[1] - shift[0], tf.quint8, shift
    bound = qint8_bound(lo, hi)
    return -bound, bound, tf.qint8, None


def bias(unit: Unit, lowering, channels: int) -> np.ndarray:
    if not unit.bias:
        return np.zeros(channels, np.float32)
    return const_value(lowering.nodes[unit.bias]).astype(np.float32).reshape(channels)


def weights_of(unit: Unit, lowering) -> np.ndarray:
    return const_value(lowering.nodes[unit.weights])
