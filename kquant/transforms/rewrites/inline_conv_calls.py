"""inline_conv_calls: bring the convolutions Keras 3 hides in function calls back into the graph.

Keras 3 on TensorFlow runs a grouped ``Conv2D(groups=...)`` on CPU as an XLA-compiled function
(``_conv_xla``), which freezing keeps as a StatefulPartitionedCall of a body holding one Conv2D: ConvNeXt's
depthwise 7x7 convolutions take this form. No fold, fusion or int8 unit sees inside a call. This transform
replaces each call whose body is a single Conv2D (and Identity/NoOp) of a constant filter in which each group
reads one input channel (groups == input channels: a depthwise convolution) by a DepthwiseConv2dNative, its
filter (kh, kw, 1, C*m) reshaped to (kh, kw, C, m).
The node keeps the call's name, so its readers are untouched; control edges from it (a stateful call's, which
freezing keeps on a NoOp) are dropped. Other grouped convolutions stay in their call.
"""

from __future__ import annotations

from tensorflow.core.framework import graph_pb2, node_def_pb2

from kquant.graphdef import StaticShapes, const_node, const_value, is_control_input, node_name, nodes_by_name
from kquant.transforms.pattern import prune_unused
from kquant.transforms.registry import register

CALL_OPS = frozenset({"PartitionedCall", "StatefulPartitionedCall"})
BODY_PASS_THROUGH = frozenset({"Identity", "NoOp"})
CONV_ATTRS = ("strides", "padding", "explicit_paddings", "dilations", "data_format", "T")


@register("inline_conv_calls")
def inline_conv_calls(graph_def, context):
    functions = {f.signature.name: f for f in graph_def.library.function}
    nodes = nodes_by_name(graph_def)
    shapes = StaticShapes(graph_def)
    replacements, replaced_filters = {}, []
    for call in graph_def.node:
        if call.op not in CALL_OPS or call.name in context.protected:
            continue
        body = functions.get(call.attr["f"].func.name)
        conv_inputs = _single_conv(body) if body is not None else None
        if conv_inputs is None:
            continue
        conv, (data, weights) = conv_inputs[0], [call.input[i] for i in conv_inputs[1]]
        filter_node = nodes.get(node_name(weights))
        if filter_node is None or filter_node.op != "Const" or conv.attr["data_format"].s not in (b"", b"NHWC"):
            continue
        kernel = const_value(filter_node)
        shape = shapes.of(data)
        channels = shape[-1] if shape else None
        if channels is None or kernel.ndim != 4:
            continue
        replacement = node_def_pb2.NodeDef(name=call.name, input=[data, weights])
        replacement.input.extend(i for i in call.input if is_control_input(i))
        for key in CONV_ATTRS:
            if key in conv.attr:
                replacement.attr[key].CopyFrom(conv.attr[key])
        if kernel.shape[2] == 1 and channels > 1 and kernel.shape[3] % channels == 0:
            depthwise = const_node(f"{call.name}/depthwise_filter",
                                   kernel.reshape(*kernel.shape[:2], channels, kernel.shape[3] // channels))
            replacement.op = "DepthwiseConv2dNative"
            replacement.input[1] = depthwise.name
            replacements[call.name] = [depthwise, replacement]
            replaced_filters.append(filter_node.name)
    if not replacements:
        return graph_def
    result = graph_pb2.GraphDef()
    result.versions.CopyFrom(graph_def.versions)
    for node in graph_def.node:
        result.node.extend(replacements.get(node.name, [node]))
    for node in result.node:  # a call was stateful, so freezing ordered a NoOp after it; a convolution is not
        kept = [i for i in node.input if not (is_control_input(i) and node_name(i) in replacements)]
        if len(kept) != len(node.input):
            del node.input[:]
            node.input.extend(kept)
    called = {n.attr["f"].func.name for n in result.node if n.op in CALL_OPS}
    result.library.function.extend(f for f in graph_def.library.function if f.signature.name in called)
    result.library.gradient.extend(graph_def.library.gradient)
    return prune_unused(result, replaced_filters, context.protected)


def _single_conv(body):
    """(the Conv2D, the call input index of its data and of its filter) when ``body`` is one Conv2D returned as its
    only output, its inputs the function's arguments (through Identity nodes); else None."""
    ops = [n for n in body.node_def if n.op not in BODY_PASS_THROUGH]
    if len(ops) != 1 or ops[0].op != "Conv2D" or len(body.signature.output_arg) != 1:
        return None
    conv = ops[0]
    by_name = {n.name: n for n in body.node_def}
    args = [a.name for a in body.signature.input_arg]

    def argument(tensor):
        name = tensor.split(":")[0]
        while name in by_name and by_name[name].op == "Identity":
            name = by_name[name].input[0].split(":")[0]
        return args.index(name) if name in args else None

    returned = body.ret[body.signature.output_arg[0].name].split(":")[0]
    while returned in by_name and by_name[returned].op == "Identity":
        returned = by_name[returned].input[0].split(":")[0]
    indices = [argument(t) for t in conv.input if not t.startswith("^")]
    if returned != conv.name or len(indices) != 2 or None in indices:
        return None
    return conv, indices
