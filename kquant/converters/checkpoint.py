"""TF1 graphs (.pb/.pbtxt with variables) plus a checkpoint -> FrozenGraph.

Variables are replaced by Const nodes holding the checkpoint's values, then the graph is
pruned to the requested outputs: the job of TF1's freeze_graph.py, without a session.
"""

from __future__ import annotations

import glob
import os
import re

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import graph_pb2, node_def_pb2, types_pb2

from kquant.errors import ModelFormatError, ModelInputError, ModelNotFoundError, first_line
from kquant.files import checked_path, checked_tree, reading
from kquant.graphdef import check_nodes_exist, const_node, extract_sub_graph, is_control_input, node_name
from kquant.summarize import VARIABLE_OPS

REF_VARIABLE_OPS = frozenset({"Variable", "VariableV2"})
_CHECKPOINT_FILE_SUFFIX = re.compile(r"\.(index|meta|data-\d+-of-\d+)$")  # model.ckpt.index -> model.ckpt


def freeze_with_checkpoint(graph_def: graph_pb2.GraphDef, checkpoint: str, outputs) -> graph_pb2.GraphDef:
    """Fold the variables of ``graph_def`` to the values in ``checkpoint`` and keep what ``outputs`` need."""
    checkpoint = _CHECKPOINT_FILE_SUFFIX.sub("", checkpoint)
    _check_checkpoint_exists(checkpoint)
    if not outputs:
        raise ModelInputError("freezing a graph with a checkpoint needs the output node names; pass outputs=[...] / --outputs")
    check_nodes_exist(graph_def, outputs, "output")
    try:
        with reading(checkpoint):
            reader = tf.train.load_checkpoint(checkpoint)
    except (ValueError, tf.errors.OpError) as exc:
        raise ModelNotFoundError(
            f"cannot read checkpoint {checkpoint} ({first_line(exc)}); pass the checkpoint prefix or its directory "
            "(e.g. run/model.ckpt for run/model.ckpt.index)"
        ) from exc
    stored = reader.get_variable_to_dtype_map()
    pruned = extract_sub_graph(graph_def, outputs)
    frozen = graph_pb2.GraphDef()
    frozen.versions.CopyFrom(pruned.versions)
    frozen.library.CopyFrom(pruned.library)
    resource_vars = {node.name for node in pruned.node if node.op in VARIABLE_OPS and node.op not in REF_VARIABLE_OPS}
    for node in pruned.node:
        reads_resource = bool(node.input) and node_name(node.input[0]) in resource_vars
        if node.op in VARIABLE_OPS:
            frozen.node.append(const_node(node.name, reader.get_tensor(_checkpoint_key(node, stored))))
        elif node.op == "ReadVariableOp" and reads_resource:
            identity = node_def_pb2.NodeDef(name=node.name, op="Identity", input=list(node.input))
            identity.attr["T"].type = node.attr["dtype"].type
            frozen.node.append(identity)
        elif node.op == "ResourceGather" and reads_resource:
            frozen.node.extend(_gather_from_constant(node))
        else:
            _reject_resource_use(node, resource_vars)
            frozen.node.add().CopyFrom(node)
    return frozen


def _check_checkpoint_exists(prefix: str) -> None:
    """A checkpoint is a directory (with a ``checkpoint`` file) or a prefix with a ``.index`` file beside it."""
    if os.path.isdir(prefix):
        checked_tree(prefix, role="checkpoint")
        return
    target = f"{prefix}.index"
    if not os.path.exists(target):
        raise ModelNotFoundError(f"checkpoint {prefix} does not exist (no {target}); pass the checkpoint prefix or its "
                                 "directory (e.g. run/model.ckpt for run/model.ckpt.index)")
    for part in [target, *glob.glob(glob.escape(prefix) + ".data-*")]:
        checked_path(part, role="checkpoint")


def _checkpoint_key(node, stored) -> str:
    candidates = [node.name]
    if "shared_name" in node.attr and node.attr["shared_name"].s:
        candidates.insert(0, node.attr["shared_name"].s.decode())
    for key in candidates:
        if key in stored:
            return key
    held = f"it has {len(stored)} entries, e.g. {', '.join(sorted(stored)[:3])}" if stored else "it is empty"
    raise ModelFormatError(f"variable {node.name} is not in the checkpoint ({held}); check the checkpoint belongs to this graph")


def _gather_from_constant(node) -> list:
    """ResourceGather(variable, indices) -> GatherV2(constant, indices, axis=0), as TensorFlow's own freezing does."""
    axis = const_node(f"{node.name}/axis", np.int32(0))
    gather = node_def_pb2.NodeDef(name=node.name, op="GatherV2", input=[*node.input[:2], axis.name, *node.input[2:]])
    gather.attr["Tparams"].type = node.attr["dtype"].type
    gather.attr["Tindices"].CopyFrom(node.attr["Tindices"])
    gather.attr["Taxis"].type = types_pb2.DT_INT32
    gather.attr["batch_dims"].i = node.attr["batch_dims"].i
    return [axis, gather]


def _reject_resource_use(node, resource_vars) -> None:
    for inp in node.input:
        if not is_control_input(inp) and node_name(inp) in resource_vars:
            raise ModelFormatError(
                f"node {node.name} ({node.op}) uses variable {node_name(inp)} in a way kquant cannot freeze; freeze the "
                "graph in its session with tf.compat.v1.graph_util.convert_variables_to_constants and pass that .pb"
            )
