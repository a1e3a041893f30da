"""GraphDefs (frozen .pb/.pbtxt files or in-memory) -> FrozenGraph with known inputs and outputs."""

from __future__ import annotations

import tensorflow as tf
from tensorflow.core.framework import graph_pb2
from tensorflow.python.framework import dtypes

from kquant.errors import ConfigurationError, first_line, ModelFormatError, ModelInputError
from kquant.graph import FrozenGraph, TensorSpec
from kquant.graphdef import (StaticShapes, check_nodes_exist, extract_sub_graph, node_name, nodes_by_name,
                             placeholder_shape, tensor_name)
from kquant.names import layer_outputs
from kquant.summarize import VARIABLE_OPS, summarize_graph


def frozen_from_graph_def(graph_def: graph_pb2.GraphDef, inputs=None, outputs=None, source: str = "the graph") -> FrozenGraph:
    """Wrap a variable-free GraphDef; inputs default to its Placeholders, outputs to its unconsumed nodes."""
    variables = [n.name for n in graph_def.node if n.op in VARIABLE_OPS]
    if variables:
        raise ModelFormatError(
            f"{source} still holds variables ({', '.join(variables[:3])}{', ...' if len(variables) > 3 else ''}); "
            "it is not frozen: pass its checkpoint (checkpoint=PREFIX / --checkpoint PREFIX)"
        )
    summary = summarize_graph(graph_def)
    input_names = [tensor_name(n) for n in inputs] if inputs else [tensor_name(i.name) for i in summary.inputs]
    output_names = ([tensor_name(n) for n in layer_outputs(graph_def, outputs)] if outputs
                    else [tensor_name(o.name) for o in summary.outputs])
    check_nodes_exist(graph_def, input_names, "input")
    check_nodes_exist(graph_def, output_names, "output")
    if not output_names:
        raise ModelInputError(f"{source} has no node that could be an output; pass outputs=[...] / --outputs")
    if outputs:
        graph_def = extract_sub_graph(graph_def, output_names)
    output_specs = _output_specs(graph_def, output_names)  # first: importing validates the nodes read below
    by_name = nodes_by_name(graph_def)
    input_names = [n for n in input_names if node_name(n) in by_name]  # inputs the kept outputs do not need are gone
    return FrozenGraph(graph_def, tuple(_placeholder_spec(by_name[node_name(n)], n) for n in input_names), output_specs)


def with_input_shapes(frozen: FrozenGraph, input_shapes) -> FrozenGraph:
    """Set the Placeholder shapes of ``frozen`` (one shape, or a dict input name -> shape); returns a copy."""
    if isinstance(input_shapes, dict):
        shapes = {node_name(str(k)): v for k, v in input_shapes.items()}
    elif len(frozen.inputs) == 1:
        shapes = {frozen.inputs[0].node: input_shapes}
    else:
        raise ModelInputError(
            f"the model has {len(frozen.inputs)} inputs; give input_shapes as a dict name -> shape "
            f"for {', '.join(i.node for i in frozen.inputs)}"
        )
    unknown = sorted(set(shapes) - {i.node for i in frozen.inputs})
    if unknown:
        raise ModelInputError(f"input_shapes names unknown inputs {', '.join(unknown)}; the inputs are "
                              f"{', '.join(i.node for i in frozen.inputs)}")
    for name, shape in shapes.items():
        try:
            shapes[name] = tf.TensorShape(shape)
            if shapes[name].rank is None:
                raise ValueError("the rank is unknown")
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"input_shapes={input_shapes!r} is not a shape for {name} ({first_line(exc)}); give "
                                     "one shape such as (None, 28, 28, 1) or a dict input name -> shape") from None
    graph_def = graph_pb2.GraphDef()
    graph_def.CopyFrom(frozen.graph_def)
    for node in graph_def.node:
        if node.name in shapes:
            node.attr["shape"].shape.CopyFrom(tf.TensorShape(shapes[node.name]).as_proto())
    inputs = tuple(
        TensorSpec(i.name, i.dtype, tuple(tf.TensorShape(shapes[i.node]).as_list())) if i.node in shapes else i
        for i in frozen.inputs
    )
    return FrozenGraph(graph_def, inputs, frozen.outputs)


def _placeholder_spec(node, name: str) -> TensorSpec:
    if node.op not in ("Placeholder", "PlaceholderWithDefault"):
        return TensorSpec(name, _infer_dtype(node), None)
    return TensorSpec(name, dtypes.as_dtype(node.attr["dtype"].type).name, placeholder_shape(node))


def _output_specs(graph_def, names) -> tuple[TensorSpec, ...]:
    """Output dtypes and shapes, read off the graph imported once (which also validates it)."""
    shapes = StaticShapes(graph_def)
    try:
        tensors = [shapes.tensor(name) for name in names]
    except (ValueError, KeyError, TypeError, tf.errors.OpError) as exc:
        raise ModelFormatError(f"the graph does not import into TensorFlow ({first_line(exc)}); "
                               "it may be corrupt or use ops this TensorFlow lacks") from exc
    return tuple(
        TensorSpec(name, t.dtype.name, None if t.shape.rank is None else tuple(t.shape.as_list()))
        for name, t in zip(names, tensors)
    )


def _infer_dtype(node) -> str:
    for key in ("T", "dtype", "out_type"):
        if key in node.attr and node.attr[key].type:
            return dtypes.as_dtype(node.attr[key].type).name
    return "float32"
