"""MatMul: the activations and GELUs it fuses, dequantizing in its kernel when only fp32 ops read it; against QDQ."""

import pytest
import tensorflow as tf

from .conftest import constant, lowered

W, B = constant(16, 12, seed=4), constant(12, seed=5, scale=0.1)
W2 = constant(12, 5, seed=6)


@pytest.mark.parametrize("approximate,name", [(False, "GeluExact"), (True, "GeluApproximate")])
def test_a_gelu_after_the_bias_is_fused(approximate, name):
    result = lowered(lambda x: tf.nn.gelu(tf.nn.bias_add(tf.matmul(x, W), B), approximate=approximate), (16,))
    (unit,) = result.emitted
    assert unit.family == "matmul" and unit.activation == name
    (op,) = [n for n in result.graph_def.node if n.op == "_QuantizedMatMul"]
    assert list(op.attr["fused_ops"].list.s) == [b"BiasAdd", name.encode(), b"Dequantize"]  # read by fp32 only
    assert "Erfc" not in result.ops() and "Tanh" not in result.ops() and result.within_steps()


def test_a_gelu_read_inside_by_another_op_is_not_fused():
    def fn(x):
        y = tf.nn.bias_add(tf.matmul(x, W), B)
        return tf.nn.gelu(y) + tf.reduce_sum(y, axis=-1, keepdims=True)

    result = lowered(fn, (16,))
    (unit,) = result.emitted
    assert unit.activation == "" and "Erfc" in result.ops()


@pytest.mark.parametrize("kernels", ["onednn", "public"])
def test_two_dense_layers_connect_in_int8(kernels):
    result = lowered(lambda x: tf.matmul(tf.nn.relu(tf.nn.bias_add(tf.matmul(x, W), B)), W2), (16,), kernels=kernels,
                     low=0.0)
    assert len(result.emitted) == 2 and result.ops().count("QuantizeV2") == 1
    assert result.within_steps()


def test_public_kernels_keep_a_tanh_matmul_fp32():
    result = lowered(lambda x: tf.tanh(tf.matmul(x, W)), (16,), kernels="public", low=0.0)
    assert result.units and not result.emitted
