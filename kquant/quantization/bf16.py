"""Run chosen fp32 units in bfloat16: Cast in, weights stored as bf16, Cast back out under the same name.

Used for the ops that accuracy-aware tuning keeps out of int8. bfloat16 is native on CPUs with
AVX512_BF16 or AMX; elsewhere oneDNN emulates it, correctly but more slowly than fp32.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import graph_pb2

from kquant.graphdef import const_value, node_name, nodes_by_name
from kquant.quantization import nodes as N
from kquant.quantization.cpu import cpu_flags

BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def has_native_bf16() -> bool:
    return any(flag in cpu_flags() for flag in BF16_FLAGS)


def units_to_bf16(graph_def, units) -> graph_pb2.GraphDef:
    """A copy of ``graph_def`` where each unit's node chain computes in bfloat16."""
    result = graph_pb2.GraphDef()
    result.CopyFrom(graph_def)
    nodes = nodes_by_name(result)
    for unit in units:
        first, last = nodes[unit.anchor], nodes[unit.output]
        cast_in = f"{unit.anchor}/to_bf16"
        result.node.append(N.make_node("Cast", cast_in, [unit.data_input], SrcT=tf.float32, DstT=tf.bfloat16))
        first.input[0] = cast_in
        if unit.summand:
            add = nodes[unit.nodes[unit.nodes.index(unit.pre_sum) + 1]]
            cast_summand = f"{add.name}/summand_to_bf16"
            result.node.append(N.make_node("Cast", cast_summand, [unit.summand], SrcT=tf.float32, DstT=tf.bfloat16))
            add.input[:] = [cast_summand if i in (unit.summand, node_name(unit.summand)) else i for i in add.input]
        for name in unit.nodes:
            nodes[name].attr["T"].CopyFrom(N.attr_value(tf.bfloat16))
        read = [nodes.get(node_name(i)) for name in unit.nodes for i in nodes[name].input]
        float_consts = {c.name for c in read if c is not None and c.op == "Const" and c.attr["dtype"].type == tf.float32}
        for const_name in sorted(float_consts):  # weights, bias and an activation's constants (a GELU's)
            const = nodes[const_name]
            value = const_value(const).astype(np.float32)
            bf16 = N.const(f"{const_name}/bf16", tf.constant(value, tf.bfloat16).numpy(), tf.bfloat16)
            result.node.append(bf16)
            for name in unit.nodes:
                node = nodes[name]
                node.input[:] = [bf16.name if i == const_name else i for i in node.input]
        computed = f"{unit.output}/bf16"
        last.name = computed  # nothing inside the chain reads its last node
        result.node.append(N.make_node("Cast", unit.output, [computed], SrcT=tf.bfloat16, DstT=tf.float32))
    return result
