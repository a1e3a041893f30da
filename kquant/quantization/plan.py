"""The quantization plan: the units of an fp32 graph that become one int8 op each, found through the registry."""

from __future__ import annotations

from kquant.graphdef import GraphIndex, ancestors, const_shape
from kquant.quantization.ops import BY_OP_TYPE, QUANTIZERS, PlanGraph, Unit

STEM_MAX_CHANNELS = 4  # grayscale, RGB or RGBA images
WEIGHTED_OPS = frozenset(op for quantizer in QUANTIZERS if quantizer.weighted for op in quantizer.op_types)


def find_units(graph_def, excluded_ops=(), excluded_nodes=()) -> list[Unit]:
    """The quantizable units of ``graph_def`` in graph order; a unit that needs an int8 input only after another."""
    graph = PlanGraph(GraphIndex(graph_def))
    excluded_ops, excluded_nodes = set(excluded_ops), set(excluded_nodes)
    units, claimed = [], set()
    for node in graph.index.topological_order():
        quantizer = BY_OP_TYPE.get(node.op)
        if quantizer is None or node.op in excluded_ops:
            continue
        unit = quantizer.match(node, graph)
        if unit is not None and unit.summand and claimed.intersection(unit.nodes):
            unit = unit.without_sum()  # both convs of a residual Add match it: the first one found fuses it
        if unit is None or excluded_nodes.intersection(unit.nodes) \
                or excluded_ops.intersection(graph.index.by_name[n].op for n in unit.nodes):
            continue
        units.append(unit)
        graph.produced.add(unit.output_tensor)
        claimed.update(unit.nodes)
    return _without_unread(units)


def _without_unread(units) -> list[Unit]:
    """``units`` without those worth int8 only when read in int8 and not read so (``dropped_when_unread``)."""
    while unread := [u for u in units if u.quantizer.dropped_when_unread and u.output_tensor not in tensors_read_as_int8(units)]:
        units = [u for u in units if u not in unread]
    return units


def tensors_read_as_int8(units) -> set[str]:
    """Every tensor some unit reads in int8: the data inputs and the residual summands."""
    return {t for u in units for t in u.data_inputs} | {u.summand for u in units if u.summand}


def tensors_to_calibrate(units) -> list[str]:
    """Every tensor whose range some unit's lowering reads (``OpQuantizer.ranges_needed``)."""
    return sorted(set().union(*(u.quantizer.ranges_needed(u) for u in units)))


def stem_convs(graph_def, units) -> list[str]:
    """Anchors of the image stems among ``units``: convolutions with at most ``STEM_MAX_CHANNELS`` input channels
    that read the model input directly or through ops other than convolutions and matmuls (a Rescaling, a Pad)."""
    index = GraphIndex(graph_def)
    stems = []
    for unit in units:
        if unit.quantizer.stem_candidate and const_shape(index.by_name[unit.weights])[2] <= STEM_MAX_CHANNELS \
                and not any(index.by_name[n].op in WEIGHTED_OPS for n in ancestors(index.by_name, [unit.data_input])):
            stems.append(unit.anchor)
    return stems
