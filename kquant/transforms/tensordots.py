"""Shared by the tensordot transforms: the elementwise ops a Reshape can cross, a MatMul chain's channels, and the
shape a tensordot's output Reshape takes (constant, or read from the first tensor with the same leading sizes).

A tensordot is Reshape to [-1, K] -> MatMul by a [K, N] constant -> Reshape back to [batch, ..., N]: how Keras runs a
Dense on a sequence, and what ``rewrite_einsum_dense_as_matmuls`` makes of an EinsumDense.
"""

from __future__ import annotations

import numpy as np
from tensorflow.core.framework import node_def_pb2, types_pb2

from kquant.graphdef import const_node, const_value, is_control_input, node_name, output_index
from kquant.transforms.folding import PER_CHANNEL_OPS

# elementwise ops a Reshape can move across: the per-channel ones and the ones of a GELU
ELEMENTWISE_MATH = PER_CHANNEL_OPS | {"Neg", "Erf", "Erfc", "Pow", "Square", "Sqrt", "Rsqrt", "Exp", "Log", "Softplus", "Abs"}


def is_reshape(node) -> bool:
    return node is not None and node.op == "Reshape"


def computed_inputs(node, index) -> list[str]:
    """The data inputs of ``node`` other than scalar or vector constants: those that decide the shape of an elementwise op's output."""
    return [i for i in index.data_inputs(node) if index.by_name.get(node_name(i)) is None
            or index.by_name[node_name(i)].op != "Const" or const_value(index.by_name[node_name(i)]).ndim > 1]


def output_shape(x: str, x_shape, kept: int, trailing, dtype, name: str, index) -> list[node_def_pb2.NodeDef]:
    """Nodes computing a tensordot output's shape [-1, x's sizes 1..kept, *trailing]; the last one outputs it. A
    constant when those sizes are static, else read from the first tensor with them (a sequence of unknown length),
    so that no int8 output is read back only for its shape."""
    if None in x_shape[1:kept]:
        return _leading_shape(_sequence_source(x, kept, index), dtype, kept, trailing, index)
    return [const_node(index.unique_name(f"{name}/shape_nd"), np.asarray([-1, *x_shape[1:kept], *trailing], np.int32))]


def _sequence_source(tensor: str, leading: int, index, memo=None) -> str:
    """The first tensor whose ``leading`` sizes are those of ``tensor``: back through elementwise ops whose
    computed inputs all come from one such tensor (a GELU's two branches), and through Reshapes whose shape
    takes those sizes from a tensor's shape."""
    memo = {} if memo is None else memo
    if tensor not in memo:
        node, memo[tensor] = index.by_name.get(node_name(tensor)), tensor
        if node is not None and output_index(tensor) == 0 and node.op in ELEMENTWISE_MATH:
            sources = {_sequence_source(i, leading, index, memo) for i in computed_inputs(node, index)}
            memo[tensor] = sources.pop() if len(sources) == 1 else tensor
        elif node is not None and output_index(tensor) == 0 and node.op == "Reshape":
            origin = shape_origin(node.input[1], leading, index)
            memo[tensor] = tensor if origin is None else _sequence_source(origin, leading, index, memo)
    return memo[tensor]


def shape_origin(shape: str, leading: int, index) -> str | None:
    """t when ``shape`` is ConcatV2(GatherV2(Shape(t), [0, 1, ...]), sizes) taking at least ``leading`` sizes of t."""
    concat = index.by_name.get(node_name(shape))
    if concat is None or concat.op != "ConcatV2" or len(index.data_inputs(concat)) != 3:
        return None
    gather = index.by_name.get(node_name(concat.input[0]))
    if gather is None or gather.op != "GatherV2" or len(index.data_inputs(gather)) != 3:
        return None
    source, taken = (index.by_name.get(node_name(i)) for i in index.data_inputs(gather)[:2])
    if source is None or source.op != "Shape" or taken is None or taken.op != "Const":
        return None
    taken = const_value(taken).reshape(-1).tolist()
    return source.input[0] if len(taken) >= leading and taken == list(range(len(taken))) else None


def _leading_shape(source: str, dtype, leading: int, trailing, index) -> list[node_def_pb2.NodeDef]:
    """Nodes computing the shape [the first ``leading`` sizes of ``source`` (a ``dtype`` tensor), *trailing]; the
    last one outputs it. The sizes of one source are read once, however many shapes use them."""
    sizes = f"{node_name(source)}/leading_{leading}"
    nodes = []
    if sizes not in index.by_name:
        shape = node_def_pb2.NodeDef(name=index.unique_name(f"{sizes}/shape"), op="Shape", input=[source])
        shape.attr["T"].CopyFrom(dtype)
        shape.attr["out_type"].type = types_pb2.DT_INT32
        taken = const_node(index.unique_name(f"{sizes}/taken"), np.arange(leading, dtype=np.int32))
        axis = const_node(index.unique_name(f"{sizes}/axis"), np.int32(0))
        gather = node_def_pb2.NodeDef(name=index.unique_name(sizes), op="GatherV2", input=[shape.name, taken.name, axis.name])
        for key in ("Tparams", "Tindices", "Taxis"):
            gather.attr[key].type = types_pb2.DT_INT32
        nodes = [shape, taken, axis, gather]
    base = index.unique_name(f"{node_name(source)}/shape_{'x'.join(map(str, trailing))}")
    axis = const_node(f"{base}/axis", np.int32(0))
    sizes_after = const_node(f"{base}/trailing", np.asarray(trailing, np.int32))
    concat = node_def_pb2.NodeDef(name=base, op="ConcatV2", input=[sizes, sizes_after.name, axis.name])
    concat.attr["N"].i = 2
    concat.attr["T"].type = concat.attr["Tidx"].type = types_pb2.DT_INT32
    return [*nodes, axis, sizes_after, concat]


def known_sizes(shape: str, index) -> np.ndarray | None:
    """A Reshape's constant ``shape``, or for one computed as ConcatV2(leading sizes, constant sizes), -1 and the
    constant sizes."""
    node = index.by_name.get(node_name(shape))
    if node is not None and node.op == "ConcatV2" and len(index.data_inputs(node)) == 3:
        node = index.by_name.get(node_name(node.input[1]))
        return None if node is None or node.op != "Const" else np.concatenate([[-1], const_value(node).reshape(-1)])
    return const_value(node).reshape(-1) if node is not None and node.op == "Const" else None


def chain_channels(tensor: str, index) -> int | None:
    """N when ``tensor`` is a 2-D [rows, N]: a MatMul by a constant, or elementwise ops on one (each node is
    looked at once, so the walk ends on any graph)."""
    node, seen = index.by_name.get(node_name(tensor)), set()
    while node is not None and output_index(tensor) == 0 and node.name not in seen:
        seen.add(node.name)
        if node.op == "MatMul":
            weights = index.by_name.get(node_name(node.input[1]))
            if weights is None or weights.op != "Const" or node.attr["transpose_a"].b:
                return None
            return const_value(weights).shape[0 if node.attr["transpose_b"].b else 1]
        if node.op not in ELEMENTWISE_MATH:
            return None
        computed = [i for i in node.input if not is_control_input(i) and index.by_name.get(node_name(i)) is not None
                    and index.by_name[node_name(i)].op != "Const"]
        if not computed:
            return None
        tensor = computed[0]
        node = index.by_name.get(node_name(tensor))
    return None
