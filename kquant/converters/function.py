"""Concrete function -> FrozenGraph: fold variables to constants and name the outputs."""

from __future__ import annotations

import re

from tensorflow.core.framework import node_def_pb2, types_pb2
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from kquant.graph import FrozenGraph, TensorSpec
from kquant.graphdef import node_name, nodes_by_name, output_index

_VALID_NODE_NAME = re.compile(r"^[A-Za-z0-9.][A-Za-z0-9_.\-/>]*$")


def freeze_concrete_function(function, output_names=None) -> FrozenGraph:
    """Freeze a ``tf.function`` concrete function; outputs get ``output_names`` where given and valid.

    The freeze's NoOp and its control edges to the weights are dropped (``drop_freeze_control_edges``): they
    order nothing, but they pin the unfolded weights, so the stock batch-norm folds would skip them.
    """
    from kquant.transforms.rewrites.remove_freeze_leftovers import drop_freeze_control_edges

    frozen_function = convert_variables_to_constants_v2(function)
    inputs = tuple(
        TensorSpec(t.name, t.dtype.name, _shape(t.shape)) for t in frozen_function.inputs if t.dtype.name != "resource"
    )
    outputs = [TensorSpec(t.name, t.dtype.name, _shape(t.shape)) for t in frozen_function.outputs]
    graph_def = frozen_function.graph.as_graph_def()
    del frozen_function  # its graph holds a copy of every weight: let it go before the graph is edited
    drop_freeze_control_edges(graph_def, {spec.node for spec in (*inputs, *outputs)})
    _inference_batch_norms_as_v1(graph_def)
    if output_names is not None:
        outputs = name_outputs(graph_def, outputs, list(output_names))
    return FrozenGraph(graph_def, inputs, tuple(outputs))


def _inference_batch_norms_as_v1(graph_def) -> None:
    """Turn, in place, each float32 inference FusedBatchNormV3 whose statistics outputs nothing reads into the
    FusedBatchNorm it computes the same as (same kernel, equal outputs): the stock fold_old_batch_norms of the seed
    lists folds only that one, and tf_keras emits V3."""
    read = {inp.lstrip("^") for node in graph_def.node for inp in node.input}
    for node in graph_def.node:
        if (node.op == "FusedBatchNormV3" and not node.attr["is_training"].b
                and node.attr["T"].type == node.attr["U"].type == types_pb2.DT_FLOAT
                and node.attr["exponential_avg_factor"].f in (0.0, 1.0)
                and not any(f"{node.name}:{i}" in read for i in range(1, 6))):
            node.op = "FusedBatchNorm"
            for name in ("U", "exponential_avg_factor"):
                if name in node.attr:
                    del node.attr[name]


def name_outputs(graph_def, outputs: list[TensorSpec], names: list[str]) -> list[TensorSpec]:
    """Give each output tensor the node name in ``names``; edits ``graph_def`` in place.

    A terminal Identity node is renamed; any other output gets a new Identity of that name.
    Outputs whose wanted name is invalid or held by another node keep their name.
    """
    taken = {node.name for node in graph_def.node}
    referenced = {node_name(inp) for node in graph_def.node for inp in node.input}
    by_name = nodes_by_name(graph_def)
    renamed = []
    for spec, wanted in zip(outputs, names):
        if not _VALID_NODE_NAME.match(wanted) or wanted in taken:
            renamed.append(spec)
            continue
        node = by_name[spec.node]
        if node.op == "Identity" and output_index(spec.name) == 0 and node.name not in referenced:
            taken.discard(node.name)
            node.name = wanted
        else:
            identity = node_def_pb2.NodeDef(name=wanted, op="Identity", input=[spec.name])
            identity.attr["T"].type = _dtype_enum(spec.dtype)
            graph_def.node.append(identity)
        taken.add(wanted)
        renamed.append(TensorSpec(f"{wanted}:0", spec.dtype, spec.shape))
    return renamed


def sanitize_node_name(name: str, fallback: str) -> str:
    """A TensorFlow-valid node name made from ``name`` (Keras names may hold ':' or spaces)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.\-/]", "_", node_name(name))
    return cleaned if cleaned and _VALID_NODE_NAME.match(cleaned) else fallback


def _shape(shape) -> tuple | None:
    return None if shape.rank is None else tuple(shape.as_list())


def _dtype_enum(dtype_name: str) -> int:
    from tensorflow.python.framework import dtypes

    return dtypes.as_dtype(dtype_name).as_datatype_enum
