"""sink_tensordot_reshapes: the Reshape back after a MatMul moves below the elementwise ops after it, so the bias and
activation follow the MatMul; a Reshape is put back where something else reads them."""

import numpy as np
import tensorflow as tf

from .conftest import assert_ops, case_from_function, constant, transformed


def reader_ops(graph, op: str) -> list:
    """The ops of the nodes reading each node of type ``op``."""
    nodes = {n.name: n for n in graph.graph_def.node}
    return sorted(n.op for n in graph.graph_def.node for i in n.input if nodes[i.split(":")[0]].op == op)


def tensordot(x, w, shape):
    return tf.reshape(tf.matmul(tf.reshape(x, [-1, w.shape[0]]), w), shape)


def test_a_bias_and_an_activation_move_above_the_reshape_back():
    w, b = constant(4, 5), constant(5, seed=1)
    case = case_from_function(lambda x: tf.nn.relu(tf.nn.bias_add(tensordot(x, w, [-1, 3, 5]), b)) * 2.0, (3, 4))
    result = transformed(case, ["sink_tensordot_reshapes"])
    assert reader_ops(result, "MatMul") == ["BiasAdd"]
    assert reader_ops(result, "Relu") == ["Mul"] and reader_ops(result, "Mul") == ["Reshape"]  # the shape back, before the output
    assert_ops(result, Reshape=2)


def test_a_bias_over_split_channels_becomes_one_value_per_channel():
    w, b = constant(4, 6), constant(2, 3, seed=1)
    case = case_from_function(lambda x: tensordot(x, w, [-1, 3, 2, 3]) + b, (3, 4))
    result = transformed(case, ["sink_tensordot_reshapes"])
    nodes = {n.name: n for n in result.graph_def.node}
    add = next(n for n in result.graph_def.node if n.op == "AddV2")
    assert [nodes[i].op for i in add.input] == ["MatMul", "Const"]
    np.testing.assert_array_equal(tf.make_ndarray(nodes[add.input[1]].attr["value"].tensor), b.numpy().reshape(-1))


def test_a_constant_broadcasting_beyond_the_split_channels_stays_after_the_reshape():
    w, wide = constant(4, 2), constant(2, 5, seed=1)
    case = case_from_function(lambda x: tf.reshape(tf.einsum("abc,cd->abd", x, w), [-1, 3, 2, 1]) + wide, (3, 4))
    result = transformed(case, ["rewrite_einsum_dense_as_matmuls", "sink_tensordot_reshapes"])  # the sum is [batch, 3, 2, 5]
    nodes = {n.name: n for n in result.graph_def.node}
    add = next(n for n in result.graph_def.node if n.op == "AddV2")
    assert {nodes[i].op for i in add.input} == {"Reshape", "Const"}


def test_an_op_that_also_reads_another_tensor_stays_after_the_reshape():
    w = constant(4, 5)
    case = case_from_function(lambda x, y: tensordot(x, w, [-1, 3, 5]) + y, (3, 4), (3, 5))
    result = transformed(case, ["sink_tensordot_reshapes"])
    assert reader_ops(result, "MatMul") == ["Reshape"]
