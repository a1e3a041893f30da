"""DepthwiseConv2dNative: a zero Pad before it becomes the int8 op's explicit padding; its lowerings against QDQ."""

import pytest
import tensorflow as tf

from .conftest import constant, lowered

W = constant(3, 3, 4, 1, seed=3)
PADS = [[0, 0], [1, 1], [1, 1], [0, 0]]


def padded_depthwise_relu(x):
    return tf.nn.relu(tf.nn.depthwise_conv2d(tf.pad(x, PADS), W, [1, 1, 1, 1], "VALID"))


def test_the_pad_before_it_is_claimed_and_done_by_the_int8_op():
    result = lowered(padded_depthwise_relu, (8, 8, 4))
    (unit,) = result.emitted
    assert unit.family == "depthwise" and unit.pad and unit.pad in unit.nodes
    (conv,) = [n for n in result.graph_def.node if n.op == "_FusedQuantizedDepthwiseConv2D"]
    assert conv.attr["padding"].s == b"EXPLICIT" and list(conv.attr["explicit_paddings"].list.i) == [0, 0, 1, 1, 1, 1, 0, 0]
    assert "Pad" not in result.ops() and result.within_steps()


@pytest.mark.parametrize("relu", [True, False])
def test_public_kernels_run_only_a_depthwise_conv_with_a_relu(relu):
    def fn(x):
        y = tf.nn.depthwise_conv2d(x, W, [1, 1, 1, 1], "SAME")
        return tf.nn.relu(y) if relu else y

    result = lowered(fn, (8, 8, 4), kernels="public", low=0.0)
    assert bool(result.emitted) == relu
    if relu:
        assert "QuantizedDepthwiseConv2DWithBiasAndReluAndRequantize" in result.ops() and result.within_steps()
