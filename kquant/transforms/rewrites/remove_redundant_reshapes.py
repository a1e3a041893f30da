"""remove_redundant_reshapes: a Reshape of a Reshape reshapes the first one's input, and a MatMul chain's [rows, N] output is not reshaped to [-1, N].

A tensordot's Reshape back, followed by a Reshape (Flatten, the next layer's Reshape to 2-D, an EinsumDense's
output read by a Dense), leaves two Reshapes where one does the same; and the next tensordot's Reshape to
[-1, N] of a MatMul chain's [rows, N] output does nothing. The first kind reads through the whole chain of
Reshapes; the second is bypassed. So consecutive Dense layers on a sequence are MatMul -> BiasAdd -> activation
-> MatMul. Graph inputs and outputs keep their shapes.
"""

from __future__ import annotations

from tensorflow.core.framework import graph_pb2

from kquant.graphdef import GraphIndex, const_value, is_control_input, node_name, output_index
from kquant.transforms.pattern import prune_unused, warn_left_as_it_was
from kquant.transforms.registry import register
from kquant.transforms.tensordots import chain_channels, is_reshape


@register("remove_redundant_reshapes")
def remove_redundant_reshapes(graph_def, context):
    result = graph_pb2.GraphDef()
    result.CopyFrom(graph_def)
    index = GraphIndex(result)
    bypassed, forward = [], {}
    for reshape in result.node:
        if not is_reshape(reshape) or output_index(reshape.input[0]) != 0:
            continue
        try:
            source = _first_not_reshaped(reshape.input[0], index)
            channels = chain_channels(source, index)
            shape = index.by_name.get(node_name(reshape.input[1]))
            unchanged = (reshape.name not in context.protected and channels is not None and shape is not None
                         and shape.op == "Const" and const_value(shape).tolist() == [-1, channels])
        except Exception as exc:  # a form not foreseen: this Reshape stays, the others are still removed
            warn_left_as_it_was(context.name, reshape, exc)
            continue
        if source != reshape.input[0]:
            bypassed.append(node_name(reshape.input[0]))
            reshape.input[0] = source
        if unchanged:
            forward[reshape.name] = source
    for node in result.node:
        node.input[:] = [forward[node_name(i)] if not is_control_input(i) and node_name(i) in forward else i
                         for i in node.input]
    return prune_unused(result, bypassed + list(forward), context.protected)


def _first_not_reshaped(tensor: str, index) -> str:
    """The tensor a chain of Reshapes ending in ``tensor`` starts from (``tensor`` itself if it is no Reshape's);
    each Reshape is looked at once, so the walk ends on any graph."""
    seen = set()
    node = index.by_name.get(node_name(tensor))
    while is_reshape(node) and output_index(tensor) == 0 and output_index(node.input[0]) == 0 and node.name not in seen:
        seen.add(node.name)
        tensor = node.input[0]
        node = index.by_name.get(node_name(tensor))
    return tensor
