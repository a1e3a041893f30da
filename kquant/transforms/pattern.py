"""Find a subgraph by op pattern and replace it: the one rewrite helper every Python transform uses.

A pattern is a nested literal, e.g. ``P("Mul", P("Conv2D", P("*", "x"), P("Const", "w")), P("Const", "scale"))``.
``replace_matching`` tries the patterns at every node, outputs first, and hands each match to a rewrite
function that returns the replacement nodes (or None to leave the match alone); a rewrite that fails on a
match leaves it alone too, with one warning naming the transform and the node (degrade, don't fail). The helper keeps the
graph consistent: the replacement keeps the root's name, a match whose inner nodes are read outside it
(through data or control edges) is left unchanged, control inputs of removed nodes move to the root,
and nodes left unused by the rewrite are pruned.
"""

from __future__ import annotations

import collections
import dataclasses
import warnings
from typing import Callable

from tensorflow.core.framework import graph_pb2, node_def_pb2
from tensorflow.python.framework import op_def_registry

from kquant.errors import first_line
from kquant.graphdef import GraphIndex, is_control_input, node_name, output_index, remove_nodes


@dataclasses.dataclass(frozen=True)
class P:
    """One node of a pattern: ``op`` ("Conv2D", "Add|AddV2", "*" for any tensor), a label, and the data inputs.

    No inputs means the node's inputs are not looked at. ``commutative`` also tries two inputs swapped.
    """

    op: str
    label: str | None = None
    inputs: tuple = ()
    commutative: bool = False

    def __init__(self, op: str, *args, commutative: bool = False):
        label = args[0] if args and isinstance(args[0], str) else None
        inputs = args[1:] if label is not None else args
        object.__setattr__(self, "op", op)
        object.__setattr__(self, "label", label)
        object.__setattr__(self, "inputs", tuple(inputs))
        object.__setattr__(self, "commutative", commutative)

    def accepts(self, op: str) -> bool:
        return self.op == "*" or op in self.op.split("|")


@dataclasses.dataclass
class Match:
    """The nodes a pattern matched, by label; ``tensors`` holds the tensor each "*" leaf stands for."""

    root: node_def_pb2.NodeDef
    nodes: dict[str, node_def_pb2.NodeDef]
    tensors: dict[str, str]
    matched: list[node_def_pb2.NodeDef]

    def __getitem__(self, label: str) -> node_def_pb2.NodeDef:
        return self.nodes[label]


Rewrite = Callable[[Match, GraphIndex], "list[node_def_pb2.NodeDef] | None"]


def replace_matching(graph_def: graph_pb2.GraphDef, patterns, rewrite: Rewrite, *, protected=(),
                     transform: str = "a transform") -> graph_pb2.GraphDef:
    """Replace each match of any of ``patterns`` with what ``rewrite`` returns; returns a new GraphDef.

    ``protected`` names nodes (the graph's inputs and outputs) that must stay: they may be the root of a
    match, never an inner node, and are never pruned. The rewrite must return a node named like the root.
    If it raises, the match stays as it was and ``transform`` is named in the warning.
    """
    index = GraphIndex(graph_def)
    protected = {node_name(name) for name in protected}
    removed: set[str] = set()  # inner nodes of replaced matches
    replacements: dict[str, list[node_def_pb2.NodeDef]] = {}
    kept: set[str] = set()  # nodes of matches the rewrite failed on: not tried again, so one warning per subgraph
    for node in reversed(index.topological_order()):
        if node.name in removed or node.name in replacements or node.name in kept:
            continue
        for pattern in patterns:
            match = match_at(pattern, node, index)
            if match is None or not _replaceable(match, index, protected, removed, replacements):
                continue
            try:
                new_nodes = rewrite(match, index)
            except Exception as exc:  # a form the rewrite did not foresee: keep it, the rest of the graph still folds
                warn_left_as_it_was(transform, node, exc)
                kept.update(inner.name for inner in match.matched)
                break
            if new_nodes is None:
                continue
            _check_root(match, new_nodes)
            replacements[node.name] = _with_control_inputs(match, new_nodes)
            removed.update(inner.name for inner in match.matched if inner.name != node.name and inner.op != "Const")
            break
    if not replacements:
        return graph_def
    return _assemble(graph_def, index, replacements, removed, protected)


def warn_left_as_it_was(transform: str, node, exc: Exception) -> None:
    """The one warning of a transform that left the subgraph at ``node`` as it was because rewriting it raised ``exc``."""
    warnings.warn(f"{transform} left {node.name} ({node.op}) as it was: it could not rewrite it "
                  f"({type(exc).__name__}: {first_line(exc)})", stacklevel=3)


def match_at(pattern: P, node, index: GraphIndex, bound=None) -> Match | None:
    """Match ``pattern`` with ``node`` as its root, or None; ``bound`` (label -> node) fixes what some labels must
    match, so a commutative node tries its other order rather than bind them elsewhere."""
    match = Match(node, dict(bound or {}), {}, [])
    return match if _match(pattern, node.name, node, index, match) else None


def _match(pattern: P, tensor: str, node, index: GraphIndex, match: Match) -> bool:
    if pattern.op == "*":
        if pattern.label:
            match.tensors[pattern.label] = tensor
        return True
    if node is None or not pattern.accepts(node.op) or output_index(tensor) != 0:
        return False
    if pattern.label in match.nodes and match.nodes[pattern.label] is not node:  # a label stands for one node
        return False
    if pattern.inputs:
        inputs = index.data_inputs(node)
        if len(inputs) != len(pattern.inputs):
            return False
        orders = [inputs, inputs[::-1]] if pattern.commutative and len(inputs) == 2 else [inputs]
        for order in orders:
            trial = Match(match.root, dict(match.nodes), dict(match.tensors), list(match.matched))
            if all(_match(p, t, index.by_name.get(node_name(t)), index, trial) for p, t in zip(pattern.inputs, order)):
                match.nodes, match.tensors, match.matched = trial.nodes, trial.tensors, trial.matched
                break
        else:
            return False
    if pattern.label:
        match.nodes[pattern.label] = node
    match.matched.append(node)
    return True


def _replaceable(match: Match, index: GraphIndex, protected, removed, replacements) -> bool:
    """A match is replaced only if nothing outside it reads its inner nodes or the root's other outputs."""
    names = {node.name for node in match.matched}
    if len(names) != len(match.matched):
        return False
    for node in match.matched:
        if node.name in removed or (node is not match.root and node.name in replacements):
            return False
        if node is match.root or node.op == "Const":
            continue
        if node.name in protected or not index.consumers(node.name) <= names:
            return False
    return all(output_index(inp) == 0 for _, inp in index.readers.get(match.root.name, ()))


def _check_root(match: Match, new_nodes) -> None:
    if not any(node.name == match.root.name for node in new_nodes):
        raise ValueError(f"a rewrite of {match.root.name} must return a node of that name")


def _with_control_inputs(match: Match, new_nodes) -> list[node_def_pb2.NodeDef]:
    """Give the new root every control input the matched nodes had (those between matched nodes aside)."""
    names = {node.name for node in match.matched}
    wanted = []
    for node in match.matched:
        wanted.extend(inp for inp in node.input if is_control_input(inp) and node_name(inp) not in names)
    result = []
    for node in new_nodes:
        missing = [inp for inp in dict.fromkeys(wanted) if inp not in node.input]
        if node.name == match.root.name and missing:
            node = _copy(node)
            node.input.extend(missing)
        result.append(node)
    return result


def _copy(node) -> node_def_pb2.NodeDef:
    copy = node_def_pb2.NodeDef()
    copy.CopyFrom(node)
    return copy


def _assemble(graph_def, index: GraphIndex, replacements, removed, protected) -> graph_pb2.GraphDef:
    result = graph_pb2.GraphDef()
    result.versions.CopyFrom(graph_def.versions)
    result.library.CopyFrom(graph_def.library)
    for node in graph_def.node:
        if node.name in replacements:
            result.node.extend(replacements[node.name])
        elif node.name not in removed:
            result.node.add().CopyFrom(node)
    dropped = [index.by_name[name] for name in removed] + [index.by_name[name] for name in replacements]
    return prune_unused(result, {node_name(i) for node in dropped for i in node.input}, protected)


def prune_unused(graph_def: graph_pb2.GraphDef, candidates, protected) -> graph_pb2.GraphDef:
    """Remove, in place, the nodes among ``candidates`` (and then their inputs) that nothing reads any more.

    Protected nodes and stateful ops are never removed. Returns ``graph_def``.
    """
    index = GraphIndex(graph_def)
    dead: set[str] = set()
    queue = collections.deque(candidates)
    while queue:
        name = queue.popleft()
        node = index.by_name.get(name)
        if node is None or name in dead or name in protected or is_stateful(node.op):
            continue
        if index.consumers(name) - dead:
            continue
        dead.add(name)
        queue.extend(node_name(inp) for inp in node.input)
    remove_nodes(graph_def, dead)
    return graph_def


def is_stateful(op: str) -> bool:
    """Ops with side effects, and ops this TensorFlow does not know, are kept even when unused."""
    op_def = op_def_registry.get(op)
    return op_def is None or op_def.is_stateful
