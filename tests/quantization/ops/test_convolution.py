"""Conv2D: the chain it claims, and its oneDNN and public lowerings against its QDQ lowering."""

import pytest
import tensorflow as tf

from .conftest import constant, lowered

W, B = constant(3, 3, 4, 6, seed=1), constant(6, seed=2, scale=0.1)


def conv_bias_relu(x):
    return tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, W, 1, "SAME"), B))


@pytest.mark.parametrize("kernels", ["onednn", "public"])
def test_conv_bias_relu_is_one_unit_and_matches_its_qdq_lowering(kernels):
    result = lowered(conv_bias_relu, (8, 8, 4), kernels=kernels, low=0.0)
    (unit,) = result.units
    assert (unit.family, unit.activation, len(unit.nodes), bool(unit.bias)) == ("convolution", "Relu", 3, True)
    assert result.emitted == result.units
    want = "_FusedQuantizedConv2D" if kernels == "onednn" else "QuantizedConv2DWithBiasAndReluAndRequantize"
    assert want in result.ops() and "Conv2D" not in result.ops()
    assert result.within_steps()


def test_a_signed_input_of_an_unpadded_conv_is_read_as_shifted_codes():
    result = lowered(lambda x: tf.nn.conv2d(x, W, 1, "VALID"), (8, 8, 4))
    (quantize,) = [n for n in result.graph_def.node if n.op == "QuantizeV2"]
    assert quantize.attr["mode"].s == b"MIN_FIRST"
    assert result.within_steps()


def test_relu6_caps_the_output_range_at_6():
    result = lowered(lambda x: tf.nn.relu6(tf.nn.conv2d(x, W * 2.0, 1, "SAME")), (8, 8, 4), low=0.0)
    (unit,) = result.emitted
    assert unit.activation == "Relu6"
    conv = next(n for n in result.graph_def.node if n.op == "_FusedQuantizedConv2D")
    max_output = next(n for n in result.graph_def.node if n.name == conv.input[-1])
    assert max_output.attr["value"].tensor.float_val == [6.0]
    assert result.fp32.max() == pytest.approx(6.0) and result.within_steps()


def test_public_kernels_keep_a_conv_with_a_signed_input_fp32():
    result = lowered(conv_bias_relu, (8, 8, 4), kernels="public")
    assert result.units and not result.emitted and "Conv2D" in result.ops()
