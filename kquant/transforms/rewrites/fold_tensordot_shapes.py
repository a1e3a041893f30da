"""fold_tensordot_shapes: a Dense on a sequence (rank 3 or more) reshapes by constant shapes, not ones computed at run time.

Keras runs a Dense on a [batch, ..., K] tensor as a tensordot: Reshape to [batch * ..., K] (after an identity
Transpose, and with the shape computed at run time from Shape -> GatherV2 -> Prod -> Pack), MatMul, and a
Reshape back to a shape computed from the input's. This transform gives the first Reshape the constant shape
[-1, K] and drops the identity Transpose; it gives the Reshape back the constant shape [-1, ..., N] where the
sizes between batch and K are static, and otherwise (a sequence of unknown length) a shape computed from the
first tensor with the same leading sizes, so no int8 output is read back only for its shape. Shapes come from
importing the graph into TensorFlow once; the shape of a Reshape given a constant shape here, which TensorFlow
could not infer, is read through the elementwise ops after it (a bias, an activation, a GELU's two branches).
"""

from __future__ import annotations

import numpy as np
from tensorflow.core.framework import graph_pb2, types_pb2

from kquant.graphdef import GraphIndex, StaticShapes, const_node, const_value, is_control_input, node_name
from kquant.transforms.pattern import prune_unused, warn_left_as_it_was
from kquant.transforms.registry import register
from kquant.transforms.tensordots import ELEMENTWISE_MATH, computed_inputs, is_reshape, known_sizes, output_shape, shape_origin


@register("fold_tensordot_shapes")
def fold_tensordot_shapes(graph_def, context):
    result = graph_pb2.GraphDef()
    result.CopyFrom(graph_def)
    index, shapes = GraphIndex(result), StaticShapes(result)  # shapes: of the graph before any fold
    dropped, known = [], {}  # known: the shapes of the Reshapes given constant shapes, which TensorFlow could not infer
    for matmul in index.topological_order():  # a tensordot's input folded first: its shape comes from further up
        tensordot = _tensordot(matmul, index, context.protected)
        if tensordot is None:
            continue
        reshape_in, reshape_out, transpose = tensordot
        x = transpose.input[0] if transpose is not None else reshape_in.input[0]
        source = _known_source(x, known, index)
        x_shape = known[source] if source is not None else shapes.of(x)
        try:
            folded = _constant_shapes(matmul, reshape_out, x, x_shape, index)
        except Exception as exc:  # a form not foreseen: this tensordot stays, the others are still folded
            warn_left_as_it_was(context.name, matmul, exc)
            continue
        if folded is None:
            continue
        shape_in, shape_out, out_shape = folded
        known[reshape_out.name] = out_shape
        dropped += [node_name(reshape_in.input[1]), node_name(reshape_out.input[1])] + ([transpose.name] if transpose else [])
        result.node.extend([shape_in, *shape_out])
        index.by_name.update((n.name, n) for n in shape_out)  # read by the tensordots after this one
        reshape_in.input[:] = [x, shape_in.name] + [i for i in reshape_in.input if is_control_input(i)]
        reshape_out.input[1] = shape_out[-1].name
        reshape_in.attr["Tshape"].type = reshape_out.attr["Tshape"].type = types_pb2.DT_INT32
    return prune_unused(result, dropped, context.protected)


def _tensordot(matmul, index, protected):
    """(Reshape in, Reshape out, the identity Transpose before them or None) when ``matmul`` is a MatMul by a constant
    between two Reshapes, the first one by a shape not yet constant; None otherwise."""
    weights = index.by_name.get(node_name(matmul.input[1])) if matmul.op == "MatMul" else None
    if weights is None or weights.op != "Const" or matmul.attr["transpose_a"].b or matmul.attr["transpose_b"].b:
        return None
    reshape_in, reshape_out = index.by_name.get(node_name(matmul.input[0])), index.only_reader(matmul.name)
    if not (is_reshape(reshape_in) and is_reshape(reshape_out)) or index.only_reader(reshape_in.name) is not matmul \
            or {reshape_in.name, reshape_out.name} & protected or index.by_name[node_name(reshape_in.input[1])].op == "Const":
        return None  # (a constant input shape: folded already, or never computed)
    source = index.by_name.get(node_name(reshape_in.input[0]))
    transpose = source if source is not None and source.op == "Transpose" and _identity_perm(source, index) \
        and index.only_reader(source.name) is reshape_in and source.name not in protected else None
    return reshape_in, reshape_out, transpose


def _constant_shapes(matmul, reshape_out, x: str, x_shape, index):
    """(the constant [-1, K], the nodes computing the output's shape, that shape with None for unknown sizes), or None
    when x's shape is not known well enough or the Reshape back is not to x's leading sizes and N."""
    k, n = const_value(index.by_name[node_name(matmul.input[1])]).shape
    if (x_shape is None or len(x_shape) < 3 or x_shape[-1] != k
            or not _tensordot_output_shape(reshape_out.input[1], x, n, len(x_shape), index)):
        return None
    reshape_in = index.by_name[node_name(matmul.input[0])]
    shape_in = const_node(index.unique_name(f"{reshape_in.name}/shape_2d"), np.asarray([-1, k], np.int32))
    shape_out = output_shape(x, x_shape, len(x_shape) - 1, [n], matmul.attr["T"], reshape_out.name, index)
    return shape_in, shape_out, [None, *x_shape[1:-1], n]


def _known_source(tensor: str, known: dict, index, memo=None) -> str | None:
    """The Reshape given a constant shape that ``tensor`` has the shape of: back through elementwise ops whose
    computed inputs all lead to it (a bias, an activation, a GELU's two branches); else None. Each node is
    looked at once (a cycle leads nowhere)."""
    memo = {} if memo is None else memo
    name = node_name(tensor)
    if name not in memo:
        node, memo[name] = index.by_name.get(name), None
        if name in known:
            memo[name] = name
        elif node is not None and node.op in ELEMENTWISE_MATH:
            sources = {_known_source(i, known, index, memo) for i in computed_inputs(node, index)}
            memo[name] = sources.pop() if len(sources) == 1 else None
    return memo[name]


def _tensordot_output_shape(tensor: str, x: str, n: int, rank: int, index) -> bool:
    """Whether ``tensor`` is how a tensordot computes its output's shape: x's shape without its last size, then n."""
    sizes = known_sizes(tensor, index)
    return shape_origin(tensor, rank - 1, index) == x and sizes is not None and sizes[1:].tolist() == [n]


def _identity_perm(transpose, index) -> bool:
    perm = index.by_name.get(node_name(transpose.input[1]))
    return perm is not None and perm.op == "Const" and const_value(perm).tolist() == list(range(const_value(perm).size))
