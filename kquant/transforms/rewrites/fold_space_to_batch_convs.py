"""fold_space_to_batch_convs: SpaceToBatchND -> conv -> BatchToSpaceND, how graphs run a dilated convolution, becomes one dilated conv.

TensorFlow's graph-mode convolution with a dilation rate (Keras's Conv2D, Conv1D, DepthwiseConv2D and
SeparableConv2D with ``dilation_rate``) splits the padded input into rate x rate phases (SpaceToBatchND), runs an undilated
VALID convolution on each and interleaves the results, cropping the end (BatchToSpaceND). That is a
convolution with ``dilations`` = the rates and explicit padding = the paddings less the crops, which
oneDNN runs in one kernel, and which can carry the conv's bias, activation and int8 form. The 1-D form
(SpaceToBatchND -> ExpandDims -> Conv2D -> Squeeze -> BatchToSpaceND) becomes ExpandDims -> dilated Conv2D
-> Squeeze. The conv is a Conv2D or a DepthwiseConv2dNative. Only constant block shapes, paddings and crops are folded, and only where the padding left
after the crops is not negative (as TensorFlow builds them). A DepthwiseConv2dNative takes its padding as a Pad before it, not
as padding="EXPLICIT", which TensorFlow's shape function for it can abort on (see mkl_fuse_pad_and_conv).
"""

from __future__ import annotations

import numpy as np
from tensorflow.core.framework import graph_pb2, node_def_pb2

from kquant.graphdef import GraphIndex, const_node, const_value, data_format, is_control_input, node_name, output_index
from kquant.transforms.pattern import prune_unused, warn_left_as_it_was
from kquant.transforms.registry import register

CONV_OPS = frozenset({"Conv2D", "DepthwiseConv2dNative"})


@register("fold_space_to_batch_convs")
def fold_space_to_batch_convs(graph_def, context):
    protected = context.protected
    result = graph_pb2.GraphDef()
    result.CopyFrom(graph_def)
    index = GraphIndex(result)
    folded, pad_nodes = [], []
    for batch_to_space in result.node:
        if batch_to_space.op != "BatchToSpaceND" or batch_to_space.name in protected:
            continue
        try:
            fold = _dilated_conv(batch_to_space, index, protected)
        except Exception as exc:  # a form not foreseen: this chain stays, the others are still folded
            warn_left_as_it_was(context.name, batch_to_space, exc)
            continue
        if fold is None:
            continue
        (space_to_batch, first, conv, last), dilations, explicit = fold
        first.input[0] = space_to_batch.input[0]
        conv.attr["dilations"].list.i[:] = dilations
        if conv.op == "DepthwiseConv2dNative" and any(explicit):
            pad_nodes += _pad_before(conv, explicit, index)
            explicit = []
        conv.attr["padding"].s = b"EXPLICIT" if any(explicit) else b"VALID"
        conv.attr["explicit_paddings"].list.i[:] = explicit if any(explicit) else []
        for reader in index.consumers(batch_to_space.name):
            node = index.by_name[reader]
            node.input[:] = [last.name if not is_control_input(i) and node_name(i) == batch_to_space.name else i
                             for i in node.input]
        folded += [batch_to_space.name, space_to_batch.name]
    result.node.extend(pad_nodes)
    return prune_unused(result, folded, protected) if folded else result


def _dilated_conv(batch_to_space, index, protected):
    """((SpaceToBatchND, its reader, the conv, the BatchToSpaceND's input), the conv's dilations, its explicit
    paddings) when ``batch_to_space`` ends a foldable chain; None otherwise."""
    chain = _chain(batch_to_space, index, protected)
    if chain is None:
        return None
    space_to_batch, first, conv, last, spatial_axes = chain
    rates = [int(r) for r in const_value(index.by_name[node_name(space_to_batch.input[1])]).reshape(-1)]
    pads = (const_value(index.by_name[node_name(space_to_batch.input[2])])
            - const_value(index.by_name[node_name(batch_to_space.input[2])]))
    if pads.shape != (len(rates), 2) or np.any(pads < 0):
        return None
    dilations, explicit = [1, 1, 1, 1], [0] * 8
    for axis, rate, (before, after) in zip(spatial_axes, rates, pads):
        dilations[axis], explicit[2 * axis], explicit[2 * axis + 1] = rate, int(before), int(after)
    return (space_to_batch, first, conv, last), dilations, explicit


def _pad_before(conv, explicit, index) -> list:
    """A zero Pad of ``conv``'s input by ``explicit`` (one before/after pair per dimension), read by ``conv``."""
    paddings = const_node(index.unique_name(f"{conv.name}/paddings"), np.asarray(explicit, np.int32).reshape(4, 2))
    pad = node_def_pb2.NodeDef(name=index.unique_name(f"{conv.name}/pad"), op="Pad", input=[conv.input[0], paddings.name])
    pad.attr["T"].CopyFrom(conv.attr["T"])
    pad.attr["Tpaddings"].type = paddings.attr["dtype"].type
    conv.input[0] = pad.name
    return [paddings, pad]


def _chain(batch_to_space, index, protected):
    """(SpaceToBatchND, its reader, the conv, the BatchToSpaceND's input, the conv's spatial axes the blocks cover)
    if ``batch_to_space`` (a BatchToSpaceND) ends a foldable chain; the reader and input are the conv, or the 1-D form's ExpandDims and Squeeze."""
    inner = _single_reader_input(batch_to_space, index, protected)
    squeeze = inner if inner is not None and inner.op == "Squeeze" else None
    conv = _single_reader_input(squeeze, index, protected) if squeeze is not None else inner
    if conv is None or conv.op not in CONV_OPS or data_format(conv) != "NHWC" or conv.attr["padding"].s != b"VALID" \
            or list(conv.attr["strides"].list.i) != [1, 1, 1, 1] or any(d != 1 for d in conv.attr["dilations"].list.i):
        return None
    expand = _single_reader_input(conv, index, protected) if squeeze is not None else None
    space_to_batch = _single_reader_input(expand if squeeze is not None else conv, index, protected)
    if space_to_batch is None or space_to_batch.op != "SpaceToBatchND":
        return None
    if squeeze is None:
        axes = (1, 2)
    else:
        squeezed = list(squeeze.attr["squeeze_dims"].list.i)
        expanded = _const_int(index, expand.input[1]) if expand is not None and expand.op == "ExpandDims" else None
        if len(squeezed) != 1 or expanded is None or squeezed[0] % 4 != expanded % 4 or expanded % 4 not in (1, 2):
            return None
        axes = (3 - expanded % 4,)  # the spatial axis that is not the size-1 one
    constants = [index.by_name.get(node_name(n.input[i])) for n in (space_to_batch, batch_to_space) for i in (1, 2)]
    if not all(c is not None and c.op == "Const" for c in constants):
        return None
    if not np.array_equal(const_value(constants[0]), const_value(constants[2])) or const_value(constants[0]).size != len(axes):
        return None
    return space_to_batch, expand or conv, conv, squeeze or conv, axes


def _single_reader_input(node, index, protected):
    """The node producing ``node``'s first input, if ``node`` is its only reader and it is not a graph input or output."""
    source = index.by_name.get(node_name(node.input[0])) if node is not None else None
    if source is None or source.name in protected or output_index(node.input[0]) != 0 \
            or index.consumers(source.name) != {node.name}:
        return None
    return source


def _const_int(index, tensor: str) -> int | None:
    node = index.by_name.get(node_name(tensor))
    if node is None or node.op != "Const" or const_value(node).size != 1:
        return None
    return int(const_value(node).reshape(-1)[0])
