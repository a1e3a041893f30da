"""The residual sum a convolution fuses (oneDNN's sum post-op): its pattern, when the kernel can fuse it, and the
ordering it needs in the int8 graph."""

from __future__ import annotations

import tensorflow as tf

from kquant.graphdef import ancestors, is_control_input, node_name, nodes_by_name, tensor_name
from kquant.transforms.pattern import P


def residual_sum(body: P) -> P:
    """``body`` + another tensor, in either order."""
    return P("Add|AddV2", "sum", body, P("*", "summand"), commutative=True)


def sum_fusable(unit, lowering) -> bool:
    """oneDNN fuses [BiasAdd, Sum, Relu, Requantize] and computes it right only for an unsigned summand: a
    quint8 one (shifted codes too) or an fp32 one, which gets a QuantizeV2 of its own. The conv writes into
    the summand's buffer, so it must not be the conv's own input (x + conv(x): TensorFlow crashed)."""
    if lowering.options.kernels != "onednn":
        return False
    summand = lowering.quantized.get(unit.summand)
    # without an activation a signed output must be shifted (see weighted.output_range), which every reader must take
    linear_ok = (bool(unit.activation) or lowering.ranges[unit.output_tensor][0] >= 0
                 or lowering.can_shift(unit.output_tensor))
    return ((summand is None or summand.dtype == tf.quint8) and linear_ok and unit.summand != unit.data_input
            and not _summand_read_after(unit, lowering))


def _summand_read_after(unit, lowering) -> bool:
    """Whether a node that depends on the residual Add also reads its summand: the fused conv overwrites the
    summand's buffer (see ``summand_readers_first``), so such a reader could not run before it."""
    add = unit.nodes[unit.nodes.index(unit.pre_sum) + 1]
    readers = lowering.index.consumers(node_name(unit.summand)) - {add}
    return any(add in ancestors(lowering.nodes, [reader]) for reader in readers)


def summand_readers_first(graph_def):
    """``graph_def`` with every other reader of a fused sum's summand made to run before that conv (control edges).

    oneDNN's sum post-op accumulates into the summand's buffer, which TensorFlow hands to the conv as its
    output; when another op still holds that buffer, the conv crashed TensorFlow (segfault), e.g. with a
    Dequantize of the summand for an fp32 reader or a graph output that nothing ordered before it.
    """
    nodes = nodes_by_name(graph_def)
    readers = {}
    for node in graph_def.node:
        for tensor in node.input:
            if not is_control_input(tensor):
                readers.setdefault(tensor_name(tensor), []).append(node.name)
    for node in graph_def.node:
        if "fused_ops" in node.attr and b"Sum" in node.attr["fused_ops"].list.s:  # reading attr[...] would add it
            unordered = set(readers[tensor_name(node.input[3])]) - ancestors(nodes, [node.name])  # itself among them
            node.input.extend(f"^{r}" for r in sorted(unordered))
    return graph_def
