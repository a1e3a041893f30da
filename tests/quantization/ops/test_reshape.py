"""Reshape of an unsigned int8 tensor -> QuantizedReshape; one no unit reads in int8 leaves the plan."""

import tensorflow as tf

from .conftest import constant, lowered

W, M = constant(3, 3, 2, 4, seed=12), constant(64, 3, seed=13)


def test_a_reshape_between_a_conv_and_a_matmul_runs_int8():
    result = lowered(lambda x: tf.matmul(tf.reshape(tf.nn.relu(tf.nn.conv2d(x, W, 1, "SAME")), [-1, 64]), M), (4, 4, 2))
    assert [u.family for u in result.emitted] == ["convolution", "reshape", "matmul"]
    assert "QuantizedReshape" in result.ops() and result.within_steps()


def test_a_reshape_only_fp32_ops_read_is_not_planned():
    result = lowered(lambda x: tf.reduce_sum(tf.reshape(tf.nn.relu(tf.nn.conv2d(x, W, 1, "SAME")), [-1, 64]), -1,
                                             keepdims=True), (4, 4, 2))
    assert [u.family for u in result.units] == ["convolution"] and "Reshape" in result.ops()
