"""remove_freeze_leftovers: drop the Identity, NoOp and control-edge clutter that freezing leaves.

convert_variables_to_constants_v2 turns each ReadVariableOp into an Identity of a Const and keeps the
function's NoOp, whose control edges reach every one of them, with a control edge from the NoOp to each
output. None of that orders anything observable, but it stops the stock folds (the weights look used
elsewhere) and keeps the unfolded weights alive. This transform
- drops control edges from nodes that only compute constants (Const, and Identity/NoOp fed only by them);
- bypasses Identity nodes left without control inputs (graph inputs and outputs, and a cond's pivots, stay), and
  the IdentityN of a custom gradient (Keras 3's swish) when nothing waits on it by a control edge;
- removes NoOps left without inputs, and the nodes no output needs any more (stateful ops stay).
Control edges from anything else (Assert, Print, stateful ops, placeholders) are kept.
"""

from __future__ import annotations

from tensorflow.core.framework import graph_pb2

from kquant.errors import TransformError
from kquant.graphdef import GraphIndex, is_control_input, node_name, remove_nodes, tensor_name
from kquant.transforms.pattern import prune_unused
from kquant.transforms.registry import register

PASS_THROUGH_OPS = frozenset({"Identity", "NoOp"})
# An Identity on a Switch output is a cond's pivot: its control edges carry the branch's deadness, the Switch's do not.
SWITCH_OPS = frozenset({"Switch", "RefSwitch", "_SwitchN"})


@register("remove_freeze_leftovers")
def remove_freeze_leftovers(graph_def, context):
    protected = context.protected
    result = graph_pb2.GraphDef()
    result.CopyFrom(graph_def)
    drop_freeze_control_edges(result, protected)
    ops = {node.name: node.op for node in result.node}
    awaited = {node_name(inp) for node in result.node for inp in node.input if is_control_input(inp)}
    forward = {node.name: node.input[0] for node in result.node
               if node.op == "Identity" and node.name not in protected and len(node.input) == 1
               and ops.get(node_name(node.input[0])) not in SWITCH_OPS}
    forward.update({f"{node.name}:{k}": inp for node in result.node
                    if node.op == "IdentityN" and node.name not in protected | awaited
                    and not any(map(is_control_input, node.input)) for k, inp in enumerate(node.input)})
    for node in result.node:
        rewired = _without_repeated_control_inputs([_resolve(inp, forward) for inp in node.input])
        if rewired != list(node.input):
            del node.input[:]
            node.input.extend(rewired)
    remove_nodes(result, {node_name(name) for name in forward})
    return prune_unused(result, [node.name for node in result.node], protected)


def drop_freeze_control_edges(graph_def, protected=()) -> None:
    """Remove, in place, the control edges from constant-only nodes and the NoOps left with no input: the first half
    of this transform, which ``freeze`` applies to every graph it hands out (every value stays exactly as it was)."""
    constant = _constant_only(graph_def)
    for node in graph_def.node:
        kept = [inp for inp in node.input if not (is_control_input(inp) and node_name(inp) in constant)]
        if len(kept) != len(node.input):
            del node.input[:]
            node.input.extend(kept)
    empty_noops = {node.name for node in graph_def.node if node.op == "NoOp" and not node.input and node.name not in protected}
    remove_nodes(graph_def, empty_noops)
    for node in graph_def.node:
        if any(node_name(inp) in empty_noops for inp in node.input):
            inputs = [inp for inp in node.input if node_name(inp) not in empty_noops]
            del node.input[:]
            node.input.extend(inputs)


def _constant_only(graph_def) -> set[str]:
    """Names of the nodes whose result is fixed: Consts, and Identity/NoOp nodes whose every input is such a node."""
    index = GraphIndex(graph_def)
    constant: set[str] = set()
    for node in index.topological_order():
        if node.op == "Const" and not node.input:
            constant.add(node.name)
        elif node.op in PASS_THROUGH_OPS and all(node_name(inp) in constant for inp in node.input):
            constant.add(node.name)
    return constant


def _resolve(inp: str, forward: dict[str, str]) -> str:
    """Follow bypassed Identities (keyed by node) and IdentityN outputs (keyed by tensor): a data input takes
    the input tensor it passes on, a control input that tensor's node."""
    control = is_control_input(inp)
    passed: set[str] = set()
    while (key := node_name(inp) if node_name(inp) in forward else tensor_name(inp)) in forward:
        if key in passed:
            raise TransformError(f"Identity nodes {', '.join(sorted(passed))} form a cycle; the graph is malformed: "
                                 "export it again from the model")
        passed.add(key)
        inp = forward[key]
    return "^" + node_name(inp) if control else inp


def _without_repeated_control_inputs(inputs: list[str]) -> list[str]:
    data = {node_name(inp) for inp in inputs if not is_control_input(inp)}
    result, seen = [], set()
    for inp in inputs:
        if is_control_input(inp):
            if inp in seen or node_name(inp) in data:
                continue
            seen.add(inp)
        result.append(inp)
    return result
