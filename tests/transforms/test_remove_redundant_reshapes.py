"""remove_redundant_reshapes: a chain of Reshapes is one Reshape, and a MatMul chain's output is not reshaped to the 2-D shape it has."""

import numpy as np
import tensorflow as tf

import kquant

from .conftest import Case, assert_ops, case_from_function, constant, outputs_of, transformed


def test_a_chain_of_reshapes_is_one_reshape_whatever_the_node_order():
    reshapes = tf.function(lambda x: tf.reshape(tf.reshape(tf.reshape(x, [-1, 12]), [-1, 6, 2]), [-1, 3, 4]))
    frozen = kquant.freeze(reshapes.get_concrete_function(tf.TensorSpec([None, 4, 3], tf.float32)))
    nodes = list(frozen.graph_def.node)[::-1]  # readers before the nodes they read
    del frozen.graph_def.node[:]
    frozen.graph_def.node.extend(nodes)
    x = np.random.default_rng(0).standard_normal((2, 4, 3)).astype(np.float32)
    result = transformed(Case(frozen, [x], outputs_of(frozen, [x])), ["remove_redundant_reshapes"])
    assert_ops(result, Reshape=1)
    reshape = next(n for n in result.graph_def.node if n.op == "Reshape")
    assert {n.name: n.op for n in result.graph_def.node}[reshape.input[0]] == "Placeholder"


def test_a_matmul_chain_is_not_reshaped_to_its_own_2d_shape():
    w = constant(4, 5)
    case = case_from_function(lambda x: tf.reshape(tf.nn.relu(tf.matmul(tf.reshape(x, [-1, 4]), w)), [-1, 5]) * 2.0, (3, 4))
    result = transformed(case, ["remove_redundant_reshapes"])
    assert_ops(result, Reshape=1, MatMul=1)
    mul = next(n for n in result.graph_def.node if n.op == "Mul")
    assert {n.name: n.op for n in result.graph_def.node}[mul.input[0]] == "Relu"


def test_the_chain_is_found_through_any_number_of_elementwise_ops():
    w = constant(4, 5)

    def long_chain(x):
        y = tf.matmul(tf.reshape(x, [-1, 4]), w)
        for _ in range(70):
            y = tf.nn.relu(y)
        return tf.reshape(y, [-1, 5]) * 2.0

    result = transformed(case_from_function(long_chain, (3, 4)), ["remove_redundant_reshapes"])
    assert_ops(result, Reshape=1, Relu=70)


def test_a_reshape_to_other_sizes_stays():
    w = constant(4, 6)
    case = case_from_function(lambda x: tf.reshape(tf.matmul(tf.reshape(x, [-1, 4]), w), [-1, 3]) * 2.0, (3, 4))
    assert_ops(transformed(case, ["remove_redundant_reshapes"]), Reshape=2)
