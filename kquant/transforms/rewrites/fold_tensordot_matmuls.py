"""fold_tensordot_matmuls: a Dense on a sequence (rank 3 or more) runs as one 2-D MatMul chain, with its bias and activation.

Keras runs a Dense on a [batch, ..., K] tensor as a tensordot: Reshape to [batch * ..., K] (after an identity
Transpose, and with the shape computed at run time from Shape -> GatherV2 -> Prod -> Pack), MatMul, and a
Reshape back; its BiasAdd and activation come after that Reshape, where no fusion finds them. This transform
- gives the first Reshape the constant shape [-1, K] and drops the identity Transpose; gives the Reshape back
  the constant shape [-1, ..., N] where the sizes between batch and K are static, and otherwise (a sequence of
  unknown length) a shape computed from the first tensor with the same leading sizes, so no int8 output is
  read back only for its shape;
- moves the Reshape back below the elementwise ops after it (BiasAdd, an activation, a GELU's ops, arithmetic
  with scalar or per-channel constants), putting it back only where something else reads them;
- reads through a Reshape of a Reshape, and drops a Reshape to [-1, N] of a MatMul chain's [rows, N] output.
So consecutive Dense layers on a sequence are MatMul -> BiasAdd -> activation -> MatMul. The same holds for an
EinsumDense (attention's query, key, value and output projections): a BatchMatMulV2 or Einsum of a tensor by a
constant that contracts the tensor's last axes with the constant's first ones becomes Reshape -> MatMul ->
Reshape, and a bias over the split channels ([heads, size]) moves with the Reshape as one per-channel vector.
Graph inputs and outputs keep their shapes.
"""

from __future__ import annotations

import numpy as np
from tensorflow.core.framework import graph_pb2, node_def_pb2, types_pb2

from kquant.graphdef import (GraphIndex, StaticShapes, const_node, const_value, data_format, is_control_input, node_name,
                             output_index)
from kquant.transforms.folding import PER_CHANNEL_OPS
from kquant.transforms.pattern import prune_unused
from kquant.transforms.registry import register

PRODUCT_OPS = frozenset({"BatchMatMul", "BatchMatMulV2", "Einsum"})  # with a constant: how EinsumDense runs
# elementwise ops a Reshape can move below: the per-channel ones and the ones of a GELU
ELEMENTWISE_MATH = PER_CHANNEL_OPS | {"Neg", "Erf", "Erfc", "Pow", "Square", "Sqrt", "Rsqrt", "Exp", "Log", "Softplus", "Abs"}


@register("fold_tensordot_matmuls")
def fold_tensordot_matmuls(graph_def, context):
    protected = context.protected
    result = graph_pb2.GraphDef()
    result.CopyFrom(graph_def)
    dropped = []
    while folded := (_products_as_tensordots(result, protected, StaticShapes(result))
                     + _constant_shapes(result, protected, StaticShapes(result))):  # TensorFlow then infers more shapes
        dropped += folded
    dropped += _read_through_reshapes(result, protected)
    _sink_reshapes(result, protected)
    return prune_unused(result, dropped + _read_through_reshapes(result, protected), protected)


def _products_as_tensordots(graph_def, protected, shapes) -> list[str]:
    """Rewrite each product of a tensor by a constant that is a tensordot (BatchMatMulV2, Einsum) as Reshape ->
    MatMul -> Reshape, the last Reshape named as the product and shaped as in ``_constant_shapes``; returns the
    constants left unread."""
    index = GraphIndex(graph_def)
    dropped = []
    for node in index.topological_order():  # a product's input converted first: its shape comes from further up
        if node.op not in PRODUCT_OPS or node.name in protected or len(index.data_inputs(node)) != 2:
            continue
        x, weights = node.input[0], index.by_name.get(node_name(node.input[1]))
        x_shape = shapes.of(x) if weights is not None and weights.op == "Const" else None
        if not x_shape or output_index(x) != 0:
            continue
        product = _tensordot_form(node, const_value(weights), x_shape)
        if product is None:
            continue
        kept, matrix, free = product
        name, dtype, controls = node.name, node.attr["T"], [i for i in node.input if is_control_input(i)]
        shape_in = const_node(index.unique_name(f"{name}/shape_2d"), np.asarray([-1, matrix.shape[0]], np.int32))
        if None in x_shape[1:kept]:  # a sequence of unknown length
            shape_out = _leading_shape(_sequence_source(x, kept, index), dtype, kept, free, index)
        else:
            shape_out = [const_node(index.unique_name(f"{name}/shape_nd"), np.asarray([-1, *x_shape[1:kept], *free], np.int32))]
        matrix = const_node(index.unique_name(f"{name}/weights_2d"), matrix)
        flat = _typed_node("Reshape", index.unique_name(f"{name}/flat"), [x, shape_in.name], dtype)
        matmul = _typed_node("MatMul", index.unique_name(f"{name}/matmul"), [flat.name, matrix.name, *controls], dtype)
        node.CopyFrom(_typed_node("Reshape", name, [matmul.name, shape_out[-1].name], dtype))
        graph_def.node.extend([shape_in, *shape_out, matrix, flat, matmul])
        index.by_name.update((n.name, n) for n in shape_out)  # read by the products after this one
        dropped.append(weights.name)
    return dropped


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


def _constant_shapes(graph_def, protected, shapes) -> list[str]:
    """Give each tensordot an input Reshape to a constant [-1, K] and an output Reshape to a constant shape, or,
    for a sequence of unknown length, to one computed from the first tensor of that length (so no int8 output
    is read back just for its shape); returns the shape inputs and Transposes left unread (none: nothing was folded)."""
    index = GraphIndex(graph_def)
    dropped, known = [], {}  # known: the shapes of the Reshapes given constant shapes, which TensorFlow could not infer

    def known_source(tensor, depth=0):
        """The Reshape given a constant shape that ``tensor`` has the shape of: back through elementwise ops whose
        computed inputs all lead to it (a bias, an activation, a GELU's two branches); else None."""
        node = index.by_name.get(node_name(tensor))
        if node is None or depth > 64:
            return None
        if node.name in known:
            return node.name
        if node.op not in ELEMENTWISE_MATH:
            return None
        computed = [i for i in index.data_inputs(node) if index.by_name.get(node_name(i)) is None
                    or index.by_name[node_name(i)].op != "Const" or const_value(index.by_name[node_name(i)]).ndim > 1]
        sources = {known_source(i, depth + 1) for i in computed}
        return sources.pop() if len(sources) == 1 else None

    def shape_of(tensor):
        source = known_source(tensor)
        return known[source] if source is not None else shapes.of(tensor)

    for matmul in index.topological_order():
        weights = index.by_name.get(node_name(matmul.input[1])) if matmul.op == "MatMul" else None
        if weights is None or weights.op != "Const" or matmul.attr["transpose_a"].b or matmul.attr["transpose_b"].b:
            continue
        reshape_in, reshape_out = index.by_name.get(node_name(matmul.input[0])), index.only_reader(matmul.name)
        if not (_is_reshape(reshape_in) and _is_reshape(reshape_out)) or index.only_reader(reshape_in.name) is not matmul \
                or {reshape_in.name, reshape_out.name} & protected or index.by_name[node_name(reshape_in.input[1])].op == "Const":
            continue  # (a constant input shape: done in an earlier pass, or never computed)
        source = index.by_name.get(node_name(reshape_in.input[0]))
        transpose = source if source is not None and source.op == "Transpose" and _identity_perm(source, index) \
            and index.only_reader(source.name) is reshape_in and source.name not in protected else None
        x = transpose.input[0] if transpose is not None else reshape_in.input[0]
        k, n = const_value(weights).shape
        x_shape = shape_of(x)
        if (x_shape is None or len(x_shape) < 3 or x_shape[-1] != k
                or not _tensordot_output_shape(reshape_out.input[1], x, n, len(x_shape), index)):
            continue
        known[reshape_out.name] = [None, *x_shape[1:-1], n]
        dropped += [node_name(reshape_in.input[1]), node_name(reshape_out.input[1])] + ([transpose.name] if transpose else [])
        shape_in = const_node(index.unique_name(f"{reshape_in.name}/shape_2d"), np.asarray([-1, k], np.int32))
        if None in x_shape[1:-1]:
            shape_out = _leading_shape(_sequence_source(x, len(x_shape) - 1, index), matmul.attr["T"], len(x_shape) - 1, [n], index)
        else:
            shape_out = [const_node(index.unique_name(f"{reshape_out.name}/shape_nd"), np.asarray([-1, *x_shape[1:-1], n], np.int32))]
        graph_def.node.extend([shape_in, *shape_out])
        index.by_name.update((n.name, n) for n in shape_out)  # read by the tensordots after this one
        reshape_in.input[:] = [x, shape_in.name] + [i for i in reshape_in.input if is_control_input(i)]
        reshape_out.input[1] = shape_out[-1].name
        reshape_in.attr["Tshape"].type = reshape_out.attr["Tshape"].type = types_pb2.DT_INT32
    return dropped


def _sequence_source(tensor: str, leading: int, index, memo=None) -> str:
    """The first tensor whose ``leading`` sizes are those of ``tensor``: back through elementwise ops whose
    computed inputs all come from one such tensor (a GELU's two branches), and through Reshapes whose shape
    takes those sizes from a tensor's shape."""
    memo = {} if memo is None else memo
    if tensor not in memo:
        node, memo[tensor] = index.by_name.get(node_name(tensor)), tensor
        if node is not None and output_index(tensor) == 0 and node.op in ELEMENTWISE_MATH:
            computed = [i for i in index.data_inputs(node) if index.by_name.get(node_name(i)) is None
                        or index.by_name[node_name(i)].op != "Const" or const_value(index.by_name[node_name(i)]).ndim > 1]
            sources = {_sequence_source(i, leading, index, memo) for i in computed}
            memo[tensor] = sources.pop() if len(sources) == 1 else tensor
        elif node is not None and output_index(tensor) == 0 and node.op == "Reshape":
            origin = _shape_origin(node.input[1], leading, index)
            memo[tensor] = tensor if origin is None else _sequence_source(origin, leading, index, memo)
    return memo[tensor]


def _shape_origin(shape: str, leading: int, index) -> str | None:
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


def _tensordot_output_shape(tensor: str, x: str, n: int, rank: int, index) -> bool:
    """Whether ``tensor`` is how a tensordot computes its output's shape: x's shape without its last size, then n."""
    sizes = _known_sizes(tensor, index)
    return _shape_origin(tensor, rank - 1, index) == x and sizes is not None and sizes[1:].tolist() == [n]


def _sink_reshapes(graph_def, protected) -> None:
    """Move each Reshape that keeps a MatMul chain's channels last, whole or split ([heads, size]), below the
    elementwise ops after it (an activation, a bias, a GELU's several ops): they read its input instead, a
    constant over the split channels becomes one per-channel vector, and a Reshape is put back only where
    something else reads them."""
    index = GraphIndex(graph_def)
    for reshape in list(graph_def.node):
        sizes = _known_sizes(reshape.input[1], index) if _is_reshape(reshape) else None
        channels = _chain_channels(reshape.input[0], index) if sizes is not None else None
        split = _channel_axes(sizes, channels) if channels is not None else None
        if split is None or reshape.name in protected:
            continue
        region = _elementwise_region(reshape.name, index, protected, split)
        if not region:
            continue
        for node in region:
            node.input[:] = [reshape.input[0] if not is_control_input(i) and node_name(i) == reshape.name else
                             _per_channel(i, split, index) for i in node.input]
        names = {node.name for node in region}
        for node in region:
            outside = [index.by_name[r] for r in index.consumers(node.name) if r not in names]
            if not outside:
                continue
            back = graph_def.node.add()
            back.CopyFrom(reshape)
            back.name = index.unique_name(f"{node.name}/reshaped")
            back.input[:] = [node.name, reshape.input[1]]
            for reader in outside:
                reader.input[:] = [back.name if not is_control_input(i) and node_name(i) == node.name else i
                                   for i in reader.input]
        index = GraphIndex(graph_def)


def _known_sizes(shape: str, index) -> np.ndarray | None:
    """A Reshape's constant ``shape``, or for one computed as ConcatV2(leading sizes, constant sizes), -1 and the
    constant sizes."""
    node = index.by_name.get(node_name(shape))
    if node is not None and node.op == "ConcatV2" and len(index.data_inputs(node)) == 3:
        node = index.by_name.get(node_name(node.input[1]))
        return None if node is None or node.op != "Const" else np.concatenate([[-1], const_value(node).reshape(-1)])
    return const_value(node).reshape(-1) if node is not None and node.op == "Const" else None


def _channel_axes(shape: np.ndarray, channels: int) -> list[int] | None:
    """The trailing sizes of a Reshape's ``shape`` that split ``channels`` ([channels] when it keeps them last)."""
    for axes in range(1, len(shape)):
        trailing = shape[len(shape) - axes:]
        if (trailing <= 0).any():
            return None
        if int(np.prod(trailing)) == channels:
            return [int(size) for size in trailing]
    return None


def _per_channel(tensor: str, split: list[int], index) -> str:
    """``tensor``, or when it is a constant over split channels, a new constant with one value per channel."""
    source = index.by_name.get(node_name(tensor))
    if len(split) == 1 or is_control_input(tensor) or source is None or source.op != "Const" or const_value(source).size == 1:
        return tensor
    value = np.broadcast_to(const_value(source), split).reshape(-1)
    flat = const_node(index.unique_name(f"{source.name}/per_channel"), value)
    index.graph_def.node.append(flat)
    return flat.name


def _elementwise_region(reshape_name: str, index, protected, split: list[int]) -> list:
    """The elementwise ops that depend on the Reshape through elementwise ops only, each reading nothing else but
    constants over its (``split``) channels: they compute the same on its input."""
    region, names = [], {reshape_name}
    candidates = [index.by_name[r] for r in index.consumers(reshape_name)]
    while candidates:
        joined = [node for node in candidates if node.name not in names and node.name not in protected
                  and node.op in ELEMENTWISE_MATH and _reads_only(node, names, index, split)]
        if not joined:
            break
        for node in joined:
            region.append(node)
            names.add(node.name)
        candidates = [index.by_name[r] for node in joined for r in index.consumers(node.name)]
    return region


def _reads_only(node, names, index, split: list[int]) -> bool:
    """Whether every data input of ``node`` is one of ``names`` or a constant that broadcasts within the ``split``
    channels."""
    for tensor in (i for i in node.input if not is_control_input(i)):
        source = index.by_name.get(node_name(tensor))
        if node_name(tensor) in names:
            if output_index(tensor) != 0:
                return False
        elif source is None or source.op != "Const" or not _within(const_value(source).shape, split):
            return False
    return node.op != "BiasAdd" or data_format(node) == "NHWC"


def _within(shape, split: list[int]) -> bool:
    """Whether a constant of ``shape`` broadcasts against the ``split`` sizes without growing them."""
    try:
        return len(shape) <= len(split) and np.broadcast_shapes(shape, split) == tuple(split)
    except ValueError:
        return False


def _read_through_reshapes(graph_def, protected) -> list[str]:
    """Reshape(Reshape(t)) reshapes t; a Reshape of a MatMul chain's output to [-1, channels] is bypassed.
    Returns the Reshapes that may be left unread."""
    index = GraphIndex(graph_def)
    bypassed, forward = [], {}
    for reshape in graph_def.node:
        if not _is_reshape(reshape) or output_index(reshape.input[0]) != 0:
            continue
        inner = index.by_name.get(node_name(reshape.input[0]))
        if _is_reshape(inner) and output_index(inner.input[0]) == 0:
            reshape.input[0] = inner.input[0]
            bypassed.append(inner.name)
        shape = index.by_name.get(node_name(reshape.input[1]))
        channels = _chain_channels(reshape.input[0], index)
        if (reshape.name not in protected and channels is not None and shape is not None and shape.op == "Const"
                and const_value(shape).tolist() == [-1, channels]):
            forward[reshape.name] = reshape.input[0]
    for node in graph_def.node:
        node.input[:] = [forward[node_name(i)] if not is_control_input(i) and node_name(i) in forward else i
                         for i in node.input]
    return bypassed + list(forward)


def _chain_channels(tensor: str, index) -> int | None:
    """N when ``tensor`` is a 2-D [rows, N]: a MatMul by a constant, or per-channel ops on one."""
    node = index.by_name.get(node_name(tensor))
    for _ in range(64):
        if node is None or output_index(tensor) != 0:
            return None
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


def _identity_perm(transpose, index) -> bool:
    perm = index.by_name.get(node_name(transpose.input[1]))
    return perm is not None and perm.op == "Const" and const_value(perm).tolist() == list(range(const_value(perm).size))


def _is_reshape(node) -> bool:
    return node is not None and node.op == "Reshape"
