"""rewrite_einsum_dense_as_matmuls: a BatchMatMulV2 or Einsum of a tensor by a constant that is a tensordot becomes Reshape -> MatMul -> Reshape."""

import numpy as np
import pytest
import tensorflow as tf

import kquant

from .conftest import Case, assert_ops, case_from_function, constant, outputs_of, transformed


def reshape_shapes(graph) -> list:
    nodes = {n.name: n for n in graph.graph_def.node}
    return sorted(tf.make_ndarray(nodes[n.input[1]].attr["value"].tensor).tolist() for n in graph.graph_def.node if n.op == "Reshape")


@pytest.mark.parametrize("product, weights, shapes", [
    (lambda x, w: tf.einsum("abc,cd->abd", x, w), (4, 5), [[-1, 3, 5], [-1, 4]]),
    (lambda x, w: tf.einsum("abc,cde->abde", x, w), (4, 2, 3), [[-1, 3, 2, 3], [-1, 4]]),  # split channels
    (lambda x, w: tf.matmul(x, w), (4, 5), [[-1, 3, 5], [-1, 4]]),  # BatchMatMulV2 by a matrix
    (lambda x, w: tf.matmul(x, w, transpose_b=True), (5, 4), [[-1, 3, 5], [-1, 4]]),
])
def test_a_product_by_a_constant_is_a_matmul_between_reshapes_by_constant_shapes(product, weights, shapes):
    w = constant(*weights)
    case = case_from_function(lambda x: product(x, w), (3, 4))
    result = transformed(case, ["rewrite_einsum_dense_as_matmuls"])
    assert_ops(result, Einsum=0, BatchMatMulV2=0, MatMul=1, Reshape=2, Shape=0)
    assert reshape_shapes(result) == shapes


@pytest.mark.parametrize("equation, weights", [("abc,dc->abd", (5, 4)),  # the constant's contracted axis is last
                                               ("abc,cd->adb", (4, 5)),  # the output's axes reordered
                                               ("abc,bcd->abd", (3, 4, 5))])  # a weight per step
def test_einsums_other_than_a_tensordot_are_left_alone(equation, weights):
    w = constant(*weights)
    case = case_from_function(lambda x: tf.einsum(equation, x, w), (3, 4))
    assert_ops(transformed(case, ["rewrite_einsum_dense_as_matmuls"]), Einsum=1, MatMul=0)


def test_a_product_of_two_activations_is_left_alone():
    case = case_from_function(lambda x, y: tf.einsum("abc,adc->abd", x, y), (3, 4), (2, 4))
    assert_ops(transformed(case, ["rewrite_einsum_dense_as_matmuls"]), Einsum=1, MatMul=0)


def test_shapes_of_products_on_a_sequence_of_unknown_length_are_read_from_the_input_whatever_the_node_order():
    w1, b1, w2 = constant(4, 6), constant(6, seed=1), constant(6, 2, 3, seed=2)
    products = tf.function(lambda x: tf.einsum("abc,cde->abde", tf.einsum("abc,cd->abd", x, w1) + b1, w2))
    frozen = kquant.freeze(products.get_concrete_function(tf.TensorSpec([None, None, 4], tf.float32)))
    nodes = list(frozen.graph_def.node)[::-1]  # readers before the nodes they read
    del frozen.graph_def.node[:]
    frozen.graph_def.node.extend(nodes)
    x = np.random.default_rng(0).standard_normal((2, 5, 4)).astype(np.float32)
    case = Case(frozen, [x], outputs_of(frozen, [x]))
    result = transformed(case, ["rewrite_einsum_dense_as_matmuls"])
    assert_ops(result, Einsum=0, MatMul=2)
    by_name = {n.name: n for n in result.graph_def.node}
    assert {by_name[n.input[0].split(":")[0]].op for n in result.graph_def.node if n.op == "Shape"} == {"Placeholder"}
    longer = np.random.default_rng(1).standard_normal((3, 9, 4)).astype(np.float32)
    assert np.abs(outputs_of(result, [longer])[0] - outputs_of(frozen, [longer])[0]).max() <= 1e-5  # any length
