"""Node names as users give them (a node, a tensor or a Keras layer name) resolved against a graph, or refused
with the closest names; and the layer a node belongs to, the one name the summary, stem and report show."""

from __future__ import annotations

import difflib
import re

from kquant.errors import ConfigurationError
from kquant.graphdef import is_control_input, node_name, nodes_by_name

_UNIQUE_SUFFIX = re.compile(r"_\d+$")


class LayerNames:
    """Keras layer of each node of ``graph_def``: the scope under the model's (``model/conv1/Conv2D`` -> ``conv1``).

    Keras 3 enters every layer scope a second time when kquant traces the model, so each scope carries a ``_1``
    (``functional_1/conv1_1/convolution``); when every layer scope has such a suffix it is dropped. With ``before``
    (the graph before optimizing), a node that a fold renamed after what it absorbed (the stock fold_batch_norms
    names the folded conv after the batch norm's Mul) belongs to the layer of the node of its op it came from.
    """

    def __init__(self, graph_def, before=None):
        self.node_names = [node.name for node in graph_def.node]
        scopes = {name.split("/")[1] for name in self.node_names if name.count("/") >= 2}
        self._strip = bool(scopes) and all(_UNIQUE_SUFFIX.search(scope) for scope in scopes)
        self._origin = {}
        if before is not None:
            old = nodes_by_name(before)
            for node in graph_def.node:
                was = old.get(node.name)
                if was is not None and was.op != node.op and (source := _source_of_op(old, was, node.op)):
                    self._origin[node.name] = source

    def of(self, node: str) -> str:
        """The layer of ``node``, or the node name itself when it is not inside a model's layer scope."""
        parts = self._origin.get(node_name(node), node_name(node)).split("/")
        if len(parts) < 3:
            return node_name(node)
        return _UNIQUE_SUFFIX.sub("", parts[1]) if self._strip else parts[1]

    def layers(self) -> list[str]:
        return sorted({self.of(name) for name in self.node_names if name.count("/") >= 2})

    def nodes(self, layer: str) -> list[str]:
        return [name for name in self.node_names if self.of(name) == layer and self.of(name) != name]


def _source_of_op(nodes, node, op, depth: int = 3):
    """The nearest node of type ``op`` among the data inputs of ``node`` (at most ``depth`` steps up), or None."""
    frontier = [node]
    for _ in range(depth):
        frontier = [nodes[node_name(inp)] for n in frontier for inp in n.input
                    if not is_control_input(inp) and node_name(inp) in nodes]
        found = next((n.name for n in frontier if n.op == op), None)
        if found:
            return found
    return None


def resolve_nodes(graph_def, names, role: str, also=None) -> tuple[str, ...]:
    """The node names ``names`` stand for: each a node or tensor name, or a Keras layer name (all its nodes).

    ``also`` is an earlier form of the graph (before optimizing) whose nodes are accepted too: one that was
    folded away stands for its layer. A name that matches nothing raises ConfigurationError with the closest names.
    """
    layers = LayerNames(graph_def, before=also)
    present = set(layers.node_names)
    earlier = LayerNames(also) if also is not None else None
    resolved = []
    for name in names:
        node = node_name(name)
        if node in present:
            resolved.append(node)
        elif layers.nodes(node):
            resolved.extend(layers.nodes(node))
        elif earlier is not None and node in earlier.node_names:
            resolved.extend(layers.nodes(earlier.of(node)) or [node])
        else:
            candidates = layers.layers() + layers.node_names
            close = difflib.get_close_matches(node, candidates, n=3, cutoff=0.5)
            hint = f"the closest are {', '.join(close)}" if close else f"its layers are {', '.join(layers.layers()[:10]) or 'none'}"
            raise ConfigurationError(f"{role} {name!r} names no node or Keras layer of the graph; {hint} "
                                     "(kquant summarize --print-structure lists every node)")
    return tuple(dict.fromkeys(resolved))


def layer_outputs(graph_def, names) -> list[str]:
    """``names`` with each one that is no node but a Keras layer replaced by that layer's output: the one node of
    the layer that no other node of it reads (``--outputs dense_2`` for ``functional_1/dense_2_1/Softmax``).
    Other names are kept as they are, for the caller's own check."""
    present = {node.name for node in graph_def.node}
    layers = LayerNames(graph_def)
    resolved = []
    for name in names:
        nodes = [] if node_name(name) in present else layers.nodes(node_name(name))
        read_inside = {node_name(i) for node in graph_def.node if node.name in nodes for i in node.input}
        last = [n for n in nodes if n not in read_inside]
        resolved.append(last[0] if len(last) == 1 else name)
    return resolved


def check_op_types(graph_def, ops, role: str) -> None:
    """Raise ConfigurationError for an op type in ``ops`` that no node of ``graph_def`` has, naming the closest."""
    present = sorted({node.op for node in graph_def.node})
    for op in ops:
        if op not in present:
            close = difflib.get_close_matches(op, present, n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}?" if close else f"the graph's op types are {', '.join(present)}"
            raise ConfigurationError(f"{role} {op!r} is no op type of the graph; {hint}")
