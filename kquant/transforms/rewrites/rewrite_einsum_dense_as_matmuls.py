"""rewrite_einsum_dense_as_matmuls: a product of a tensor by a constant that is a tensordot becomes Reshape -> MatMul -> Reshape.

An EinsumDense (attention's query, key, value and output projections) runs as a BatchMatMulV2 or an Einsum of a
tensor by a constant that contracts the tensor's last axes with the constant's first ones. As Reshape to
[-1, K] -> MatMul by the [K, N] constant -> Reshape back (named as the product), it is the form a Dense on a
sequence takes, which int8 MatMuls run and the other tensordot transforms fold further. The Reshape back gets a
constant shape where the sizes between batch and the contracted axes are static, and otherwise (a sequence of
unknown length) one read from the first tensor with the same leading sizes. Einsums of two activations
(attention's scores and mix) and other equations are left alone. Shapes come from importing the graph into
TensorFlow once.
"""

from __future__ import annotations

import numpy as np
from tensorflow.core.framework import graph_pb2, node_def_pb2, types_pb2

from kquant.graphdef import GraphIndex, StaticShapes, const_node, const_value, is_control_input, node_name, output_index
from kquant.transforms.pattern import prune_unused, warn_left_as_it_was
from kquant.transforms.registry import register
from kquant.transforms.tensordots import output_shape

PRODUCT_OPS = frozenset({"BatchMatMul", "BatchMatMulV2", "Einsum"})


@register("rewrite_einsum_dense_as_matmuls")
def rewrite_einsum_dense_as_matmuls(graph_def, context):
    result = graph_pb2.GraphDef()
    result.CopyFrom(graph_def)
    index, shapes = GraphIndex(result), StaticShapes(result)  # shapes: of the graph before any rewrite
    dropped = []
    for node in index.topological_order():  # a product's input rewritten first: its shape comes from further up
        weights = _constant_operand(node, index, context.protected)
        x_shape = shapes.of(node.input[0]) if weights is not None else None
        if not x_shape:
            continue
        try:
            rewritten = _as_matmul(node, const_value(weights), x_shape, index)
        except Exception as exc:  # a form not foreseen: this product stays, the others are still rewritten
            warn_left_as_it_was(context.name, node, exc)
            continue
        if rewritten is None:
            continue
        reshape, nodes, shape = rewritten
        node.CopyFrom(reshape)
        result.node.extend(nodes)
        index.by_name.update((n.name, n) for n in shape)  # read by the products after this one
        dropped.append(weights.name)
    return prune_unused(result, dropped, context.protected)


def _constant_operand(node, index, protected):
    """The constant ``node`` multiplies its first input (output 0 of a node) by, if it is a product by a constant."""
    if node.op not in PRODUCT_OPS or node.name in protected or len(index.data_inputs(node)) != 2 \
            or output_index(node.input[0]) != 0:
        return None
    weights = index.by_name.get(node_name(node.input[1]))
    return weights if weights is not None and weights.op == "Const" else None


def _as_matmul(node, weights: np.ndarray, x_shape, index):
    """(the Reshape back named as ``node``, the nodes it reads that are new, the ones among them computing its
    shape) when ``node`` is a tensordot; None otherwise."""
    product = _tensordot_form(node, weights, x_shape)
    if product is None:
        return None
    kept, matrix, free = product
    x, name, dtype, controls = node.input[0], node.name, node.attr["T"], [i for i in node.input if is_control_input(i)]
    shape_in = const_node(index.unique_name(f"{name}/shape_2d"), np.asarray([-1, matrix.shape[0]], np.int32))
    shape_out = output_shape(x, x_shape, kept, free, dtype, name, index)
    matrix = const_node(index.unique_name(f"{name}/weights_2d"), matrix)
    flat = _typed_node("Reshape", index.unique_name(f"{name}/flat"), [x, shape_in.name], dtype)
    matmul = _typed_node("MatMul", index.unique_name(f"{name}/matmul"), [flat.name, matrix.name, *controls], dtype)
    reshape = _typed_node("Reshape", name, [matmul.name, shape_out[-1].name], dtype)
    return reshape, [shape_in, *shape_out, matrix, flat, matmul], shape_out


def _typed_node(op: str, name: str, inputs, dtype) -> node_def_pb2.NodeDef:
    """A MatMul, or a Reshape by an int32 shape, computing in ``dtype`` (an AttrValue)."""
    node = node_def_pb2.NodeDef(name=name, op=op, input=list(inputs))
    node.attr["T"].CopyFrom(dtype)
    if op == "Reshape":
        node.attr["Tshape"].type = types_pb2.DT_INT32
    return node


def _tensordot_form(node, weights: np.ndarray, x_shape) -> tuple[int, np.ndarray, list] | None:
    """(x's axes kept, the constant as a [K, N] matrix, the output's trailing sizes) when ``node`` contracts x's
    last axes with the constant's first ones and keeps x's other axes in order; None otherwise."""
    if node.op == "Einsum":
        inputs, _, output = node.attr["equation"].s.decode().partition("->")
        x, _, w = inputs.partition(",")
        contracted = "".join(c for c in x if c not in output)
        kept, free = x[:len(x) - len(contracted)], w[len(contracted):]
        if ("." in node.attr["equation"].s.decode() or not contracted or not kept or x != kept + contracted
                or w != contracted + free or output != kept + free or len(set(x + free)) != len(x + free)
                or len(x) != len(x_shape) or list(x_shape[len(kept):]) != list(weights.shape[:len(contracted)])):
            return None
        k = int(np.prod(weights.shape[:len(contracted)]))
        return len(kept), weights.reshape(k, -1), list(weights.shape[len(contracted):])
    if node.attr["adj_x"].b or weights.ndim != 2 or len(x_shape) < 3:
        return None
    matrix = weights.T if node.attr["adj_y"].b else weights
    return (len(x_shape) - 1, matrix, [matrix.shape[1]]) if x_shape[-1] == matrix.shape[0] else None
