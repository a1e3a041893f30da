"""fold_conv1d_squeezes: let 1-D convolutions and poolings run as one chain of 4-D ops, with their bias and activation.

Keras (3 and tf_keras) runs Conv1D, MaxPooling1D and AveragePooling1D as ExpandDims -> 4-D op -> Squeeze,
so the BiasAdd, batch norm and ReLU of a Conv1D follow a Squeeze instead of the Conv2D, where no fold or
fusion finds them, and each layer leaves the 4-D form to enter it again. This transform
- moves each Squeeze of a size-1 spatial axis below the per-channel ops reading it: BiasAdd, an
  elementwise activation, an Add/Sub/Mul/RealDiv/Maximum/Minimum by a scalar or per-channel constant,
  and a Pad (its paddings get a zero pair for the axis);
- makes a 1-D pooling expand the axis a Conv1D expands (tf_keras pools over axis 2, convs over axis 1),
  and a Pad that an ExpandDims reads (a causal Conv1D on the input) pad the 4-D tensor instead;
- bypasses each ExpandDims that restores the axis its input's Squeeze removed, and each Squeeze a
  Reshape reads (Flatten after a 1-D layer).
The conv is then followed by its BiasAdd and activation (fusable, foldable, quantizable as one unit)
and consecutive 1-D layers meet without leaving 4-D. Graph inputs and outputs keep their shapes.
"""

from __future__ import annotations

import numpy as np
from tensorflow.core.framework import graph_pb2

from kquant.graphdef import GraphIndex, const_node, const_value, data_format, is_control_input, node_name, output_index
from kquant.transforms.folding import PER_CHANNEL_OPS, varies_only_along_channels
from kquant.transforms.pattern import prune_unused, warn_left_as_it_was
from kquant.transforms.registry import register

FOUR_D_OPS = frozenset({"Conv2D", "DepthwiseConv2dNative", "MaxPool", "AvgPool"})
POOL_OPS = frozenset({"MaxPool", "AvgPool"})
PAD_OPS = frozenset({"Pad", "PadV2"})


@register("fold_conv1d_squeezes")
def fold_conv1d_squeezes(graph_def, context):
    protected, kept = context.protected, set()  # kept: the Squeezes left where they are after a failed move
    result = graph_pb2.GraphDef()
    result.CopyFrom(graph_def)
    _pool_over_axis_1(result, protected, context.name)
    _pad_after_expand_dims(result, protected, context.name)
    while _sink_one_squeeze(result, protected, context.name, kept):
        pass
    return _bypass_restoring_expand_dims(result, protected, context.name)


def _checked(check, transform: str, node, *args) -> bool:
    """``check(node, *args)``; False, with the warning that ``transform`` left ``node`` as it was, when it raises
    (a form not foreseen: that subgraph stays, the rest of the graph is still folded)."""
    try:
        return check(node, *args)
    except Exception as exc:
        warn_left_as_it_was(transform, node, exc)
        return False


def _pool_over_axis_1(graph_def, protected, transform: str) -> None:
    """ExpandDims(x, 2) -> pool -> Squeeze(2) becomes ExpandDims(x, 1) -> pool (window turned) -> Squeeze(1)."""
    index = GraphIndex(graph_def)
    for pool in list(graph_def.node):
        if pool.op not in POOL_OPS or pool.name in protected or not _checked(_pools_over_axis_2, transform, pool, index, protected):
            continue
        expand, squeeze = index.by_name[node_name(pool.input[0])], index.only_reader(pool.name)
        axis = const_node(index.unique_name(f"{expand.name}/axis_1"), np.int32(1))
        graph_def.node.append(axis)
        expand.input[1] = axis.name
        for key in ("ksize", "strides"):
            values = list(pool.attr[key].list.i)
            values[1], values[2] = values[2], values[1]
            pool.attr[key].list.i[:] = values
        squeeze.attr["squeeze_dims"].list.i[:] = [1]


def _pools_over_axis_2(pool, index, protected) -> bool:
    """Whether ``pool`` is an NHWC pool between an ExpandDims of axis 2 and a Squeeze of it, each its only reader."""
    expand = index.by_name.get(node_name(pool.input[0]))
    squeeze = index.only_reader(pool.name)
    return not (data_format(pool) != "NHWC" or expand is None or expand.op != "ExpandDims" or _expanded_axis(expand, index) != 2
                or index.only_reader(expand.name) is not pool or squeeze is None or squeeze.op != "Squeeze"
                or _squeezed_axis(squeeze, index) != 2 or expand.name in protected)


def _pad_after_expand_dims(graph_def, protected, transform: str) -> None:
    """ExpandDims(Pad(x)) becomes Pad(ExpandDims(x)), where a Pad can meet the conv it pads (a causal Conv1D)."""
    index = GraphIndex(graph_def)
    for expand in graph_def.node:
        if expand.op != "ExpandDims" or not _checked(_expands_a_3d_pad, transform, expand, index, protected):
            continue
        pad, axis = index.by_name[node_name(expand.input[0])], _expanded_axis(expand, index)
        readers = [index.by_name[name] for name in index.consumers(expand.name)]
        expand.input[0], pad.input[0] = pad.input[0], expand.name
        _insert_padding_row(graph_def, pad, axis, index)
        for reader in readers:
            reader.input[:] = [pad.name if not is_control_input(i) and node_name(i) == expand.name else i for i in reader.input]


def _expands_a_3d_pad(expand, index, protected) -> bool:
    """Whether ``expand`` adds axis 1 or 2 to a Pad of a 3-D tensor by constants that only it reads."""
    pad = index.by_name.get(node_name(expand.input[0]))
    axis = _expanded_axis(expand, index) if pad is not None else None
    return not (axis not in (1, 2) or pad.op not in PAD_OPS or pad.name in protected or expand.name in protected
                or index.only_reader(pad.name) is not expand or not _padding_3d(pad, index))


def _padding_3d(pad, index) -> bool:
    """Whether the Pad's paddings (and a PadV2's value) are constants, the paddings of a 3-D tensor."""
    constants = [index.by_name.get(node_name(i)) for i in pad.input[1:] if not is_control_input(i)]
    return (len(constants) == (1 if pad.op == "Pad" else 2) and all(c is not None and c.op == "Const" for c in constants)
            and const_value(constants[0]).shape == (3, 2))


def _insert_padding_row(graph_def, pad, axis: int, index) -> None:
    """Give ``pad`` paddings for the 4-D tensor: a zero pair at ``axis``."""
    paddings = np.insert(const_value(index.by_name[node_name(pad.input[1])]), axis, 0, axis=0)
    padding_node = const_node(index.unique_name(f"{pad.name}/paddings_4d"), paddings.astype(np.int32))
    graph_def.node.append(padding_node)
    pad.input[1] = padding_node.name


def _sink_one_squeeze(graph_def, protected, transform: str, kept: set) -> bool:
    """Move one Squeeze below the per-channel op that alone reads it; False when none is left to move. A Squeeze
    whose move fails is added to ``kept`` and not tried again."""
    index = GraphIndex(graph_def)
    for squeeze in graph_def.node:
        if squeeze.op != "Squeeze" or squeeze.name in protected or squeeze.name in kept:
            continue
        try:
            movable = _movable(squeeze, index, protected)
        except Exception as exc:  # a form not foreseen: this Squeeze stays, the others still move
            warn_left_as_it_was(transform, squeeze, exc)
            kept.add(squeeze.name)
            continue
        if not movable:
            continue
        op = index.only_reader(squeeze.name)
        readers = [index.by_name[name] for name in index.consumers(op.name)]
        position = [node_name(i) for i in op.input].index(squeeze.name)
        op.input[position] = squeeze.input[0]
        if op.op in PAD_OPS:
            _insert_padding_row(graph_def, op, _squeezed_axis(squeeze, index), index)
        squeeze.input[0] = op.name
        for reader in readers:
            reader.input[:] = [squeeze.name if not is_control_input(i) and node_name(i) == op.name else i
                               for i in reader.input]
        return True
    return False


def _movable(squeeze, index, protected) -> bool:
    """Whether ``squeeze`` removes spatial axis 1 or 2 and its only reader is a per-channel op that may move above it."""
    op = index.only_reader(squeeze.name) if _squeezed_axis(squeeze, index) in (1, 2) else None
    return op is not None and op.name not in protected and _per_channel(op, squeeze.name, index)


def _bypass_restoring_expand_dims(graph_def, protected, transform: str) -> graph_pb2.GraphDef:
    """Readers of ExpandDims(Squeeze(t, axis), axis) read t, and a Reshape of a Squeeze reshapes t (a Squeeze
    keeps the element order); what is left unread is pruned."""
    index = GraphIndex(graph_def)
    squeezes = set()
    for reshape in graph_def.node:
        source = index.by_name.get(node_name(reshape.input[0])) if reshape.op == "Reshape" else None
        if source is not None and source.op == "Squeeze" and output_index(reshape.input[0]) == 0:
            reshape.input[0] = source.input[0]
            squeezes.add(source.name)
    forward = {}
    for expand in graph_def.node:
        if expand.op != "ExpandDims" or expand.name in protected or output_index(expand.input[0]) != 0:
            continue
        if _checked(_restores_its_squeeze, transform, expand, index):
            forward[expand.name] = index.by_name[node_name(expand.input[0])].input[0]
    for node in graph_def.node:
        node.input[:] = [forward[node_name(i)] if not is_control_input(i) and output_index(i) == 0 and node_name(i) in forward
                         else i for i in node.input]
    return prune_unused(graph_def, [*forward, *squeezes], protected)


def _restores_its_squeeze(expand, index) -> bool:
    """Whether ``expand`` adds back the axis that the Squeeze it reads removed."""
    squeeze = index.by_name.get(node_name(expand.input[0]))
    return squeeze is not None and squeeze.op == "Squeeze" and _squeezed_axis(squeeze, index) is not None \
        and _expanded_axis(expand, index) == _squeezed_axis(squeeze, index)


def _squeezed_axis(squeeze, index) -> int | None:
    """The one axis (0-3) a Squeeze removes from a 4-D NHWC tensor, or None when that is not known."""
    dims = list(squeeze.attr["squeeze_dims"].list.i) if "squeeze_dims" in squeeze.attr else []
    if len(dims) != 1 or output_index(squeeze.input[0]) != 0 or not _four_d(node_name(squeeze.input[0]), index):
        return None
    return dims[0] % 4


def _expanded_axis(expand, index) -> int | None:
    """The axis (0-3) an ExpandDims inserts to make a 4-D tensor from a 3-D one, or None when that is not known."""
    dim = index.by_name.get(node_name(expand.input[1]))
    if dim is None or dim.op != "Const" or const_value(dim).size != 1:
        return None
    value = int(const_value(dim).reshape(-1)[0])
    return value % 4 if -4 <= value <= 3 else None


def _four_d(name: str, index, depth: int = 0) -> bool:
    """Whether the node's first output is known to be a 4-D NHWC tensor: a conv or pool, or an op this transform moved."""
    node = index.by_name.get(name)
    if node is None or depth > 64:
        return False
    if node.op in FOUR_D_OPS:
        return data_format(node) == "NHWC"
    if node.op in PER_CHANNEL_OPS | PAD_OPS:
        data = [i for i in node.input if not is_control_input(i)]
        return any(output_index(i) == 0 and _four_d(node_name(i), index, depth + 1) for i in data[:2])
    return False


def _per_channel(op, squeeze_name: str, index) -> bool:
    """Whether ``op`` computes the same on the 4-D tensor as on its squeezed form (a Pad, given paddings for it)."""
    if op.op in PAD_OPS:
        return [node_name(i) for i in op.input].count(squeeze_name) == 1 and node_name(op.input[0]) == squeeze_name \
            and _padding_3d(op, index)
    return varies_only_along_channels(op, squeeze_name, index)
