"""Exact 8-bit arithmetic for a quantization plan, as a float graph: the reference the int8 kernels are held to.

The fp32 graph with every quantized weight replaced by its int8 value (per channel for convolutions,
as the rewrite quantizes it, without the pair-safe scaling) and an asymmetric 8-bit FakeQuant (TFLite's
scheme) at every tensor the int8 graph rounds, using the calibrated ranges (a ConcatV2's output: the union of
its inputs' ranges, onto which QuantizedConcat requantizes them). What the plan costs with
exact rounding and no kernel effects; `benchmarks/fer_gap.py` and the random-architecture tests compare
kquant's int8 output with it.
"""

from __future__ import annotations

import copy

import numpy as np
from tensorflow.core.framework import node_def_pb2
from tensorflow.python.framework import tensor_util

from kquant.quantization.patterns import tensors_read_as_int8
from kquant.quantization.rewrite import (
    _quantize_weights,
    dequantized_weights,
    rewrite_graph,
)


def simulated_graph_def(fp32, units, ranges):
    """``fp32`` (a FrozenGraph) with int8-rounded weights and FakeQuant on every tensor ``units`` quantize."""
    _, units = rewrite_graph(fp32.graph_def, units, ranges, fp32.output_names)  # residual sums as the rewrite fuses them
    graph_def = copy.deepcopy(fp32.graph_def)
    nodes = {n.name: n for n in graph_def.node}
    weighted = [u for u in units if u.kind in ("conv", "matmul")]
    for unit in weighted:
        node = nodes[unit.weights]
        weights = tensor_util.MakeNdarray(node.attr["value"].tensor)
        depthwise = nodes[unit.anchor].op == "DepthwiseConv2dNative"
        q, w_max = _quantize_weights(weights, unit.kind == "conv", depthwise)
        channels = weights.shape[2] * weights.shape[3] if depthwise else weights.shape[-1]
        exact = dequantized_weights(q, w_max, channels).reshape(weights.shape).astype(np.float32)
        node.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(exact))
    read_as_int8 = tensors_read_as_int8(units)
    # a MatMul read only by fp32 ops dequantizes in its kernel, unrounded
    rounded = [u.output_tensor for u in weighted if u.kind == "conv" or u.output_tensor in read_as_int8]
    # MaxPool and Reshape pass their input's codes on; AvgPool's mean is rounded to its own range here
    on_a_grid = set(rounded) | {u.output_tensor for u in units if u.kind in ("MaxPool", "Reshape")}
    entering = ([u.data_input for u in weighted] + [u.summand for u in weighted if u.summand]
                + [t for u in units if u.kind == "ConcatV2" for t in u.data_inputs])
    points = rounded + [t for t in entering if t not in on_a_grid]
    ranges = dict(ranges)
    for unit in units:
        if unit.kind == "ConcatV2":  # QuantizedConcat rounds each input onto the union of their ranges
            ranges[unit.output_tensor] = (0.0, max(ranges[t][1] for t in unit.data_inputs))
            points.append(unit.output_tensor)
    for tensor in dict.fromkeys(points):
        low, high = ranges[tensor]
        name = tensor.split(":")[0]
        fake = node_def_pb2.NodeDef(name=f"{name}/fake_quant", op="FakeQuantWithMinMaxArgs", input=[name])
        fake.attr["min"].f, fake.attr["max"].f, fake.attr["num_bits"].i = min(low, 0.0), max(high, 0.0), 8
        for node in graph_def.node:
            node.input[:] = [fake.name if i in (name, tensor) else i for i in node.input]
        graph_def.node.append(fake)
    return graph_def
