"""sink_tensordot_reshapes: the Reshape back after a MatMul chain moves below the elementwise ops after it, so a Dense's bias and activation follow its MatMul.

A tensordot (a Dense on a sequence, an EinsumDense) ends in a Reshape from the MatMul's [rows, N] back to
[batch, ..., N], or to [batch, ..., heads, size]; its BiasAdd and activation come after that Reshape, where no
fusion finds them. This transform moves each Reshape that keeps a MatMul chain's channels last, whole or split,
below the elementwise ops after it (a bias, an activation, a GELU's several ops, arithmetic with scalar or
per-channel constants): they read its input instead, a constant over the split channels becomes one per-channel
vector, and the Reshape is put back only where something else reads them. Graph inputs and outputs keep their shapes.
"""

from __future__ import annotations

import numpy as np
from tensorflow.core.framework import graph_pb2, node_def_pb2

from kquant.graphdef import GraphIndex, const_node, const_value, data_format, is_control_input, node_name, output_index
from kquant.transforms.pattern import prune_unused, warn_left_as_it_was
from kquant.transforms.registry import register
from kquant.transforms.tensordots import ELEMENTWISE_MATH, chain_channels, is_reshape, known_sizes


@register("sink_tensordot_reshapes")
def sink_tensordot_reshapes(graph_def, context):
    result = graph_pb2.GraphDef()
    result.CopyFrom(graph_def)
    index, sunk = GraphIndex(result), []
    for reshape in list(result.node):
        if not is_reshape(reshape) or reshape.name in context.protected:
            continue
        try:
            moved = _sunk_below(reshape, index, context.protected)
        except Exception as exc:  # a form not foreseen: this Reshape stays, the others still move
            warn_left_as_it_was(context.name, reshape, exc)
            continue
        if moved is None:
            continue
        new_inputs, new_nodes, readers_of = moved
        for node, inputs in new_inputs:
            node.input[:] = inputs
        result.node.extend(new_nodes)
        for reader, inputs in readers_of:
            reader.input[:] = inputs
        sunk.append(reshape.name)
        index = GraphIndex(result)
    return prune_unused(result, sunk, context.protected)


def _sunk_below(reshape, index, protected):
    """The edits that move ``reshape`` below the elementwise ops after it: (each op and its new inputs, the new
    nodes, each outside reader and its new inputs); None when it keeps no MatMul chain's channels last or no op
    can move."""
    sizes = known_sizes(reshape.input[1], index)
    channels = chain_channels(reshape.input[0], index) if sizes is not None else None
    split = _channel_axes(sizes, channels) if channels is not None else None
    region = _elementwise_region(reshape.name, index, protected, split) if split is not None else None
    if not region:
        return None
    new_inputs, new_nodes = [], []
    for node in region:
        inputs = []
        for i in node.input:
            if not is_control_input(i) and node_name(i) == reshape.name:
                inputs.append(reshape.input[0])
                continue
            flat = _per_channel(i, split, index)
            new_nodes += [flat] if flat is not None else []
            inputs.append(flat.name if flat is not None else i)
        new_inputs.append((node, inputs))
    names = {node.name for node in region}
    readers_of = []
    for node in region:
        outside = [index.by_name[r] for r in sorted(index.consumers(node.name)) if r not in names]
        if not outside:
            continue
        back = node_def_pb2.NodeDef()
        back.CopyFrom(reshape)
        back.name = index.unique_name(f"{node.name}/reshaped")
        back.input[:] = [node.name, reshape.input[1]]
        new_nodes.append(back)
        readers_of += [(reader, [back.name if not is_control_input(i) and node_name(i) == node.name else i
                                 for i in reader.input]) for reader in outside]
    return new_inputs, new_nodes, readers_of


def _channel_axes(shape: np.ndarray, channels: int) -> list[int] | None:
    """The trailing sizes of a Reshape's ``shape`` that split ``channels`` ([channels] when it keeps them last)."""
    for axes in range(1, len(shape)):
        trailing = shape[len(shape) - axes:]
        if (trailing <= 0).any():
            return None
        if int(np.prod(trailing)) == channels:
            return [int(size) for size in trailing]
    return None


def _per_channel(tensor: str, split: list[int], index):
    """A new constant with one value per channel when ``tensor`` is a constant over the ``split`` channels; else None."""
    source = index.by_name.get(node_name(tensor))
    if len(split) == 1 or is_control_input(tensor) or source is None or source.op != "Const" or const_value(source).size == 1:
        return None
    value = np.broadcast_to(const_value(source), split).reshape(-1)
    return const_node(index.unique_name(f"{source.name}/per_channel"), value)


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
