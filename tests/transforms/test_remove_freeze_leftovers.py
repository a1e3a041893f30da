"""remove_freeze_leftovers: the Identity/NoOp/control-edge clutter of freezing goes, control edges that matter stay."""

import numpy as np
import pytest
import tensorflow as tf

import kquant
from kquant.errors import GraphRunError
from kquant.transforms import apply_transforms

from .conftest import assert_ops, case_from_function, constant, count_ops, outputs_of, transformed


def control_edges(graph):
    return kquant.summarize_graph(graph).control_edges


def with_freeze_noop(case):
    """``case`` as TF's convert_variables_to_constants_v2 alone leaves it: a NoOp with a control edge from every weight
    Identity, and one from the NoOp to the output (kquant's freeze drops them)."""
    graph_def = type(case.frozen.graph_def)()
    graph_def.CopyFrom(case.frozen.graph_def)
    outputs = {spec.node for spec in case.frozen.outputs}
    weights = [n.name for n in graph_def.node if n.op == "Identity" and n.name not in outputs]
    graph_def.node.add(name="NoOp", op="NoOp", input=[f"^{name}" for name in weights])
    for node in graph_def.node:
        if node.name in outputs:
            node.input.append("^NoOp")
    return type(case)(kquant.FrozenGraph(graph_def, case.frozen.inputs, case.frozen.outputs), case.inputs, case.expected)


def test_fer_loses_its_81_identities_noop_and_control_edges(fer_case):
    fer_case = with_freeze_noop(fer_case)
    before = kquant.summarize_graph(fer_case.frozen)
    assert (before.op_counts["Identity"], before.op_counts["NoOp"], before.control_edges) == (81, 1, 81)
    result = transformed(fer_case, "remove_freeze_leftovers")
    assert_ops(result, Identity=1, NoOp=0)  # the output, renamed "predictions" by freeze, stays
    assert control_edges(result) == 0
    assert count_ops(result)["Const"] == count_ops(fer_case.frozen)["Const"]


def test_it_unblocks_the_stock_batch_norm_folds(fer_case):
    fer_case = with_freeze_noop(fer_case)
    stock = ["remove_nodes(op=Identity, op=CheckNumerics)", "fold_constants(ignore_errors=true)", "fold_batch_norms"]
    # remove_nodes moves the NoOp's control edges onto the weights, which then look used elsewhere
    assert count_ops(apply_transforms(fer_case.frozen, stock))["Mul"] == 14
    assert count_ops(transformed(fer_case, ["remove_freeze_leftovers"] + stock))["Mul"] == 0


def guarded(x):
    """x * c + 1, computed only after a tf.debugging.Assert (a cond with pivots, NoOps and control edges) checks x is finite."""
    check = tf.debugging.Assert(tf.reduce_all(tf.math.is_finite(x)), [x])
    with tf.control_dependencies([check]):
        y = tf.identity(x) * constant(3, seed=1)
    return y + 1.0


def test_control_edges_from_an_assert_survive():
    case = case_from_function(guarded, (3,))
    result = transformed(case, "remove_freeze_leftovers")
    assert count_ops(result)["Assert"] == 1
    assert count_ops(result)["Identity"] < count_ops(case.frozen)["Identity"]
    bad = [np.array([[1.0, np.inf, 0.0]], np.float32)]
    for graph in (case.frozen, result):
        with pytest.raises(GraphRunError, match="assertion failed"):
            outputs_of(graph, bad)


def test_an_identity_with_a_control_input_from_a_placeholder_stays():
    case = case_from_function(lambda x, y: tf.identity(x) * 2.0, (3,), (3,))
    graph_def = case.frozen.graph_def
    identity = next(node for node in graph_def.node if node.op == "Identity" and node.input[0] == "x0")
    identity.input.append("^x1")
    result = apply_transforms(case.frozen, "remove_freeze_leftovers")
    kept = {node.name: list(node.input) for node in result.graph_def.node}
    assert kept[identity.name] == ["x0", "^x1"]


@tf.custom_gradient
def _swish(x):
    """A swish with its own gradient, as Keras 3 computes one: freezing leaves an IdentityN around it."""
    y = x * tf.sigmoid(x)
    return y, lambda dy: dy


def test_a_custom_gradients_identity_n_is_bypassed_and_one_waited_on_stays():
    case = case_from_function(lambda x: _swish(x) * 2.0, (3,))
    assert count_ops(case.frozen)["IdentityN"] == 1
    assert count_ops(transformed(case, "remove_freeze_leftovers"))["IdentityN"] == 0
    waited = case_from_function(lambda x: _swish(x) * 2.0, (3,))
    identity_n = next(node for node in waited.frozen.graph_def.node if node.op == "IdentityN")
    output = next(node for node in waited.frozen.graph_def.node if node.op == "Identity")
    output.input.append(f"^{identity_n.name}")
    assert count_ops(transformed(waited, "remove_freeze_leftovers"))["IdentityN"] == 1
