"""The match-and-replace helper: matching, the cases it refuses, control edges, pruning, and the input left untouched."""

from tensorflow.core.framework import graph_pb2, node_def_pb2

from kquant.graphdef import GraphIndex
from kquant.transforms.pattern import P, match_at, replace_matching


def graph(*nodes) -> graph_pb2.GraphDef:
    """graph(("x", "Placeholder"), ("y", "Neg", "x"), ...): name, op, inputs."""
    result = graph_pb2.GraphDef()
    for name, op, *inputs in nodes:
        result.node.add(name=name, op=op, input=inputs)
    return result


def ops(graph_def) -> dict:
    return {node.name: (node.op, list(node.input)) for node in graph_def.node}


# Neg(Abs(x)) -> Relu(x), named as the Neg
NEG_ABS = P("Neg", "neg", P("Abs", "abs", P("*", "x")))


def to_relu(match, index):
    return [node_def_pb2.NodeDef(name=match.root.name, op="Relu", input=[match.tensors["x"]])]


BASE = (("x", "Placeholder"), ("a", "Abs", "x"), ("n", "Neg", "a"), ("out", "Identity", "n"))


def test_match_binds_labels_and_tensors():
    index = GraphIndex(graph(*BASE))
    match = match_at(NEG_ABS, index.by_name["n"], index)
    assert match["neg"].name == "n" and match["abs"].name == "a" and match.tensors == {"x": "x"}
    assert match_at(NEG_ABS, index.by_name["a"], index) is None


def test_commutative_tries_both_orders():
    g = graph(("x", "Placeholder"), ("c", "Const"), ("m", "Mul", "c", "x"))
    index = GraphIndex(g)
    assert match_at(P("Mul", P("*", "x"), P("Const", "c")), index.by_name["m"], index) is None
    match = match_at(P("Mul", P("*", "x"), P("Const", "c"), commutative=True), index.by_name["m"], index)
    assert match.tensors == {"x": "x"} and match["c"].name == "c"


def test_replacement_keeps_the_root_name_and_prunes_what_it_left_unused():
    g = graph(*BASE)
    result = replace_matching(g, [NEG_ABS], to_relu, protected=["x", "out"])
    assert ops(result) == {"x": ("Placeholder", []), "n": ("Relu", ["x"]), "out": ("Identity", ["n"])}
    assert ops(g)["n"] == ("Neg", ["a"])  # the input graph is untouched


def test_inner_node_used_outside_the_match_leaves_it_unchanged():
    g = graph(*BASE, ("other", "Exp", "a"))
    assert replace_matching(g, [NEG_ABS], to_relu, protected=["x", "out", "other"]) is g
    g = graph(*BASE, ("waits", "NoOp", "^a"))
    assert replace_matching(g, [NEG_ABS], to_relu, protected=["x", "out", "waits"]) is g


def test_protected_inner_node_leaves_it_unchanged():
    g = graph(*BASE)
    assert replace_matching(g, [NEG_ABS], to_relu, protected=["x", "out", "a"]) is g


def test_root_read_through_another_output_leaves_it_unchanged():
    g = graph(*BASE, ("second", "Identity", "n:1"))
    assert replace_matching(g, [NEG_ABS], to_relu, protected=["x", "out", "second"]) is g


def test_control_inputs_of_removed_nodes_move_to_the_root():
    g = graph(("x", "Placeholder"), ("check", "Assert", "x"), ("a", "Abs", "x", "^check"), ("n", "Neg", "a"), ("out", "Identity", "n"))
    result = replace_matching(g, [NEG_ABS], to_relu, protected=["x", "out"])
    assert ops(result)["n"] == ("Relu", ["x", "^check"])
    assert "check" in ops(result)


def test_a_rewrite_returning_none_leaves_the_match_for_the_next_pattern():
    g = graph(*BASE)
    calls = []
    result = replace_matching(g, [NEG_ABS, P("Neg", "neg", P("*", "x"))],
                              lambda m, i: calls.append(m.root.name) or (None if len(calls) == 1 else to_relu(m, i)),
                              protected=["x", "out"])
    assert calls == ["n", "n"]
    assert ops(result)["n"] == ("Relu", ["a"]) and ops(result)["a"] == ("Abs", ["x"])


def test_pruning_removes_unused_constants_but_keeps_stateful_nodes():
    pattern = P("Neg", "neg", P("Add", "add", P("*", "x"), P("*", "y")))
    g = graph(("x", "Placeholder"), ("shape", "Const"), ("random", "RandomUniform", "shape"), ("c", "Const"),
              ("a", "Add", "x", "random"), ("n", "Neg", "a"), ("b", "Add", "x", "c"), ("m", "Neg", "b"), ("out", "AddN", "n", "m"))
    result = replace_matching(g, [pattern], to_relu, protected=["x", "out"])
    assert ops(result)["n"] == ("Relu", ["x"]) and ops(result)["m"] == ("Relu", ["x"])
    assert {"random", "shape"} <= set(ops(result)) and not {"a", "b", "c"} & set(ops(result))


def test_nodes_outside_the_match_keep_repeated_inputs():
    g = graph(("x", "Placeholder"), ("a", "Abs", "x"), ("n", "Neg", "a"), ("sq", "Mul", "n", "n", "^x"), ("out", "Identity", "sq"))
    result = replace_matching(g, [NEG_ABS], to_relu, protected=["x", "out"])
    assert ops(result)["sq"] == ("Mul", ["n", "n", "^x"]) and ops(result)["n"] == ("Relu", ["x"])


def test_a_bound_label_makes_a_commutative_node_try_its_other_order():
    g = graph(("x", "Placeholder"), ("a", "Abs", "x"), ("b", "Abs", "x"), ("s", "AddV2", "a", "b"))
    index = GraphIndex(g)
    pattern = P("AddV2", P("Abs", "mine", P("*")), P("*", "other"), commutative=True)
    assert match_at(pattern, index.by_name["s"], index)["mine"].name == "a"
    bound = match_at(pattern, index.by_name["s"], index, bound={"mine": index.by_name["b"]})
    assert bound["mine"].name == "b" and bound.tensors["other"] == "a"
