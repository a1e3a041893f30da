"""The one GraphDef toolkit: tensor and node names, node lookups, consumers, topological order, constants, shapes.

Every transform, converter and the quantizer read graphs through these, so a graph question has one answer (and one
place to fix). Nothing here reads or writes files (kquant.graph does) or imports another kquant module but errors.
"""

from __future__ import annotations

import collections

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import graph_pb2, node_def_pb2
from tensorflow.python.framework import tensor_util

from kquant.errors import NodeNotFoundError

# ops that are never a graph's output even when nothing reads them
NOT_OUTPUT_OPS = frozenset({"Const", "NoOp", "Placeholder", "PlaceholderWithDefault", "Assign", "AssignVariableOp",
                            "VarHandleOp"})


def node_name(tensor: str) -> str:
    """``'^a'``, ``'a:1'`` or ``'a'`` -> ``'a'``."""
    tensor = tensor.lstrip("^")
    head, sep, tail = tensor.rpartition(":")
    return head if sep and tail.isdigit() else tensor


def tensor_name(name: str) -> str:
    """``'a'`` -> ``'a:0'``; names that already carry an output index are kept."""
    head, sep, tail = name.rpartition(":")
    return name if sep and tail.isdigit() else f"{name}:0"


def output_index(tensor: str) -> int:
    head, sep, tail = tensor.rpartition(":")
    return int(tail) if sep and tail.isdigit() else 0


def is_control_input(name: str) -> bool:
    return name.startswith("^")


def nodes_by_name(graph_def: graph_pb2.GraphDef) -> dict:
    return {node.name: node for node in graph_def.node}


def consumers(graph_def: graph_pb2.GraphDef) -> dict[str, list]:
    """Map node name -> the nodes that read any of its outputs (data edges only)."""
    result: dict[str, list] = {node.name: [] for node in graph_def.node}
    for node in graph_def.node:
        for inp in node.input:
            if not is_control_input(inp):
                result.setdefault(node_name(inp), []).append(node)
    return result


def ancestors(nodes: dict, names) -> set[str]:
    """The nodes named in ``names`` (nodes or tensors) and every node they depend on, through data and control
    inputs; ``nodes``: name -> NodeDef."""
    seen, pending = set(), [node_name(n) for n in names]
    while pending:
        name = pending.pop()
        if name in seen or name not in nodes:
            continue
        seen.add(name)
        pending.extend(node_name(inp) for inp in nodes[name].input)
    return seen


def extract_sub_graph(graph_def: graph_pb2.GraphDef, node_names) -> graph_pb2.GraphDef:
    """The nodes that ``node_names`` need (through data and control inputs), in graph order, with library and versions."""
    keep = ancestors(nodes_by_name(graph_def), node_names)
    pruned = graph_pb2.GraphDef()
    pruned.versions.CopyFrom(graph_def.versions)
    pruned.library.CopyFrom(graph_def.library)
    pruned.node.extend(node for node in graph_def.node if node.name in keep)
    return pruned


def remove_nodes(graph_def: graph_pb2.GraphDef, names) -> None:
    """Delete the nodes named in ``names`` from ``graph_def`` in place. Deleting by index keeps the other nodes where
    they are; rebuilding the list (``del node[:]`` then ``extend``) would copy every kept node, weights and all."""
    names = set(names)
    for index in reversed([i for i, node in enumerate(graph_def.node) if node.name in names]):
        del graph_def.node[index]


def likely_inputs(graph_def: graph_pb2.GraphDef) -> list[node_def_pb2.NodeDef]:
    """The Placeholders: what a frozen graph is fed."""
    return [node for node in graph_def.node if node.op == "Placeholder"]


def likely_outputs(graph_def: graph_pb2.GraphDef) -> list[node_def_pb2.NodeDef]:
    """The nodes nothing reads (through data or control edges) that compute something."""
    read = {node_name(inp) for node in graph_def.node for inp in node.input}
    return [node for node in graph_def.node if node.name not in read and node.op not in NOT_OUTPUT_OPS]


def check_nodes_exist(graph_def: graph_pb2.GraphDef, names, role: str) -> None:
    """Raise NodeNotFoundError if any tensor or node in ``names`` is missing from the graph."""
    known = {node.name for node in graph_def.node}
    missing = [node_name(name) for name in names if node_name(name) not in known]
    if missing:
        hint = [node.name for node in (likely_inputs if role == "input" else likely_outputs)(graph_def)]
        raise NodeNotFoundError(
            f"unknown {role} node(s) {', '.join(missing)}; the graph's likely {role}s are "
            f"{', '.join(hint) or '(none found)'} (run `kquant summarize MODEL` to list them)"
        )


def placeholder_shape(node) -> tuple | None:
    """The shape attribute of a Placeholder as a tuple (None for an unknown dimension), None for an unknown rank."""
    shape = node.attr["shape"].shape if "shape" in node.attr else None
    if shape is None or shape.unknown_rank:
        return None
    return tuple(None if d.size < 0 else d.size for d in shape.dim)


def const_node(name: str, value, dtype=None) -> node_def_pb2.NodeDef:
    """A Const node holding ``value`` (numpy array or scalar), optionally as ``dtype``."""
    array = np.asarray(value)
    proto = tensor_util.make_tensor_proto(array, dtype=dtype, shape=array.shape)
    node = node_def_pb2.NodeDef(name=name, op="Const")
    node.attr["dtype"].type = proto.dtype
    node.attr["value"].tensor.CopyFrom(proto)
    return node


def const_value(node) -> np.ndarray:
    """The value a Const node holds."""
    return tensor_util.MakeNdarray(node.attr["value"].tensor)


def data_format(node) -> str:
    return node.attr["data_format"].s.decode() if "data_format" in node.attr else "NHWC"


def const_shape(node) -> tuple[int, ...]:
    """The shape of a Const node's value, read without decoding it."""
    return tuple(d.size for d in node.attr["value"].tensor.tensor_shape.dim)


def output_channels(conv, weights_shape) -> int:
    """The output channels of a Conv2D, DepthwiseConv2dNative or MatMul with weights of this shape."""
    if conv.op == "MatMul":
        return weights_shape[0] if conv.attr["transpose_b"].b else weights_shape[1]
    if conv.op == "DepthwiseConv2dNative":
        return weights_shape[2] * weights_shape[3]
    return weights_shape[3]


class GraphIndex:
    """Read-only lookups over a GraphDef: nodes by name, their consumers, an order, fresh names."""

    def __init__(self, graph_def: graph_pb2.GraphDef):
        self.graph_def = graph_def
        self.by_name = nodes_by_name(graph_def)
        self.readers: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)
        for node in graph_def.node:
            for inp in node.input:
                self.readers[node_name(inp)].append((node.name, inp))
        self._taken = set(self.by_name)

    def data_inputs(self, node) -> list[str]:
        return [inp for inp in node.input if not is_control_input(inp)]

    def consumers(self, name: str) -> set[str]:
        """Names of the nodes that read ``name`` through a data or a control edge."""
        return {reader for reader, _ in self.readers.get(name, ())}

    def only_reader(self, name: str):
        """The one node reading ``name``, through its first output and a data edge; None if there is not exactly one."""
        readers = self.readers.get(name, [])
        if len(readers) != 1 or is_control_input(readers[0][1]) or output_index(readers[0][1]) != 0:
            return None
        return self.by_name[readers[0][0]]

    def unique_name(self, base: str) -> str:
        name, n = base, 1
        while name in self._taken:
            name, n = f"{base}_{n}", n + 1
        self._taken.add(name)
        return name

    def topological_order(self) -> list[node_def_pb2.NodeDef]:
        """Nodes with every input before its readers (Kahn's algorithm, graph order among the ready); nodes on a
        cycle keep their place at the end."""
        pending = {node.name: len({node_name(i) for i in node.input} & self.by_name.keys()) for node in self.graph_def.node}
        ready = collections.deque(name for name, count in pending.items() if count == 0)
        order = []
        while ready:
            name = ready.popleft()
            order.append(self.by_name[name])
            for reader in sorted(self.consumers(name)):
                pending[reader] -= 1
                if pending[reader] == 0:
                    ready.append(reader)
        seen = {node.name for node in order}
        return order + [node for node in self.graph_def.node if node.name not in seen]


def topological_order(graph_def: graph_pb2.GraphDef) -> list[node_def_pb2.NodeDef]:
    """The nodes of ``graph_def`` with every input before its readers (see GraphIndex.topological_order)."""
    return GraphIndex(graph_def).topological_order()


class StaticShapes:
    """Static tensor shapes and dtypes, from importing the graph into TensorFlow once, when first asked.

    The import raises what ``tf.graph_util.import_graph_def`` raises for a graph that does not import.
    """

    def __init__(self, graph_def):
        self.graph_def = graph_def
        self._graph = None

    @property
    def graph(self) -> tf.Graph:
        if self._graph is None:
            graph = tf.Graph()
            with graph.as_default():
                tf.graph_util.import_graph_def(self.graph_def, name="")
            self._graph = graph
        return self._graph

    def tensor(self, name: str) -> tf.Tensor:
        return self.graph.get_tensor_by_name(tensor_name(name))

    def of(self, tensor: str) -> list | None:
        """The static shape of ``tensor`` (None for an unknown dimension), None for an unknown rank."""
        shape = self.tensor(tensor).shape
        return None if shape.rank is None else shape.as_list()
