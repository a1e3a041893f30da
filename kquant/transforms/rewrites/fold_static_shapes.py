"""fold_static_shapes: give a Reshape a constant shape where Keras 3 computes it at run time from static sizes.

Keras 3's Flatten and Reshape freeze to Shape(x) -> StridedSlice -> Pack -> Reshape, because the batch
dimension is unknown. Every other element is known once the graph is built, so the Pack becomes a
Const with -1 for the one unknown dimension, and the Shape/StridedSlice nodes go if nothing else reads them.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from kquant.graphdef import StaticShapes, const_node, const_value, node_name
from kquant.transforms.pattern import P, replace_matching
from kquant.transforms.registry import register

# Reshape(x, Pack(...)): the Pack's elements are read by the rewrite
PATTERN = P("Reshape", "reshape", P("*", "x"), P("Pack", "pack"))


@register("fold_static_shapes")
def fold_static_shapes(graph_def, context):
    shapes = StaticShapes(graph_def)
    return replace_matching(graph_def, [PATTERN], lambda match, index: _fold(match, index, shapes),
                            protected=context.protected, transform=context.name)


def _fold(match, index, shapes):
    pack = match["pack"]
    if pack.attr["axis"].i != 0:
        return None
    dims = [_element(index, inp, shapes) for inp in index.data_inputs(pack)]
    if any(d is _UNKNOWN for d in dims) or sum(d is None or d == -1 for d in dims) > 1:
        return None
    value = np.asarray([-1 if d is None else d for d in dims], dtype=tf.as_dtype(pack.attr["T"].type).as_numpy_dtype)
    return [const_node(pack.name, value), match["reshape"]]


_UNKNOWN = object()  # an element that is not a constant nor a dimension of a known tensor


def _element(index, tensor, shapes):
    """An int, None for a dimension unknown until run time, or _UNKNOWN."""
    node = index.by_name.get(node_name(tensor))
    if node is None:
        return _UNKNOWN
    if node.op == "Const":
        value = const_value(node)
        return int(value) if value.size == 1 and value.ndim <= 1 else _UNKNOWN
    if node.op != "StridedSlice" or node.attr["shrink_axis_mask"].i != 1 or any(
            node.attr[mask].i for mask in ("begin_mask", "end_mask", "ellipsis_mask", "new_axis_mask")):
        return _UNKNOWN
    source, begin, end, strides = (index.by_name.get(node_name(i)) for i in index.data_inputs(node))
    if source is None or source.op != "Shape" or any(n is None or n.op != "Const" for n in (begin, end, strides)):
        return _UNKNOWN
    if const_value(strides).tolist() != [1] or len(const_value(begin)) != 1:
        return _UNKNOWN
    shape = shapes.of(index.data_inputs(source)[0])
    k = int(const_value(begin)[0])
    if shape is None or not -len(shape) <= k < len(shape):
        return _UNKNOWN
    return shape[k]
