"""The GraphDef toolkit on small literal graphs: names, consumers, order, likely inputs and outputs, constants, shapes."""

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import graph_pb2, node_def_pb2

from kquant.errors import NodeNotFoundError
from kquant.graphdef import (GraphIndex, StaticShapes, check_nodes_exist, const_node, const_value, consumers,
                             extract_sub_graph, likely_inputs, likely_outputs, node_name, nodes_by_name, output_channels,
                             output_index, placeholder_shape, tensor_name, topological_order)


def graph(*nodes) -> graph_pb2.GraphDef:
    """graph(("x", "Placeholder"), ("y", "Neg", "x"), ...): name, op, inputs."""
    result = graph_pb2.GraphDef()
    for name, op, *inputs in nodes:
        result.node.add(name=name, op=op, input=inputs)
    return result


def names(nodes) -> list[str]:
    return [node.name for node in nodes]


def test_tensor_and_node_names():
    assert [node_name(t) for t in ("^a", "a:1", "a", "scope/a:0")] == ["a", "a", "a", "scope/a"]
    assert [tensor_name(t) for t in ("a", "a:2")] == ["a:0", "a:2"]
    assert [output_index(t) for t in ("a", "a:3")] == [0, 3]


def test_consumers_follow_data_edges_only():
    g = graph(("x", "Placeholder"), ("y", "Neg", "x"), ("z", "Identity", "x:0", "^y"))
    assert {name: names(readers) for name, readers in consumers(g).items()} == {"x": ["y", "z"], "y": [], "z": []}


def test_topological_order_puts_inputs_first_whatever_the_graph_order():
    g = graph(("out", "AddV2", "a", "b"), ("b", "Neg", "x"), ("a", "Identity", "x", "^b"), ("x", "Placeholder"))
    order = names(topological_order(g))
    assert order.index("x") < order.index("b") < order.index("a") < order.index("out")
    assert names(topological_order(g)) == names(GraphIndex(g).topological_order())


def test_topological_order_keeps_a_cycle_at_the_end():
    g = graph(("p", "Merge", "x", "q"), ("q", "NextIteration", "p"), ("x", "Placeholder"))
    assert names(topological_order(g)) == ["x", "p", "q"]


def test_likely_inputs_and_outputs():
    g = graph(("x", "Placeholder"), ("w", "Const"), ("y", "MatMul", "x", "w"), ("init", "NoOp"), ("z", "Neg", "y"))
    assert names(likely_inputs(g)) == ["x"]
    assert names(likely_outputs(g)) == ["z"]


def test_a_missing_node_names_the_likely_ones():
    g = graph(("x", "Placeholder"), ("y", "Neg", "x"))
    check_nodes_exist(g, ["x:0", "y"], "output")
    with pytest.raises(NodeNotFoundError, match="unknown output node.*nope; the graph's likely outputs are y"):
        check_nodes_exist(g, ["nope:0"], "output")
    with pytest.raises(NodeNotFoundError, match="likely inputs are x"):
        check_nodes_exist(g, ["nope"], "input")


def test_extract_sub_graph_keeps_what_the_outputs_need_in_graph_order():
    g = graph(("x", "Placeholder"), ("c", "NoOp"), ("y", "Neg", "x", "^c"), ("other", "Neg", "x"))
    assert names(extract_sub_graph(g, ["y:0"]).node) == ["x", "c", "y"]


def test_const_node_and_const_value_round_trip():
    value = np.arange(6, dtype=np.float32).reshape(2, 3)
    node = const_node("w", value)
    np.testing.assert_array_equal(const_value(node), value)
    assert const_value(const_node("s", 3, dtype=tf.int64)).dtype == np.int64


def test_output_channels_of_each_weighted_op():
    def op(name, **attrs):
        node = node_def_pb2.NodeDef(name="n", op=name)
        for key, flag in attrs.items():
            node.attr[key].b = flag
        return node

    assert output_channels(op("Conv2D"), (3, 3, 4, 8)) == 8
    assert output_channels(op("DepthwiseConv2dNative"), (3, 3, 4, 2)) == 8
    assert output_channels(op("MatMul"), (16, 10)) == 10
    assert output_channels(op("MatMul", transpose_b=True), (10, 16)) == 10


def test_placeholder_shape():
    with tf.Graph().as_default() as g:
        tf.compat.v1.placeholder(tf.float32, (None, 28, 28, 1), name="image")
        tf.compat.v1.placeholder(tf.float32, None, name="anything")
    nodes = nodes_by_name(g.as_graph_def())
    assert placeholder_shape(nodes["image"]) == (None, 28, 28, 1)
    assert placeholder_shape(nodes["anything"]) is None


def test_static_shapes_import_the_graph_once():
    with tf.Graph().as_default() as g:
        x = tf.compat.v1.placeholder(tf.float32, (None, 4), name="x")
        tf.reshape(x, (-1, 2, 2), name="r")
    shapes = StaticShapes(g.as_graph_def())
    assert shapes.of("r") == [None, 2, 2]
    imported = shapes.graph
    assert shapes.of("x:0") == [None, 4] and shapes.graph is imported
