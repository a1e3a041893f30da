"""The residual sum a convolution fuses: when it fuses, and the readers of its summand ordered before it."""

import tensorflow as tf

from kquant.graphdef import is_control_input

from .conftest import constant, lowered

W1, W2, W3 = constant(3, 3, 4, 4, seed=14), constant(3, 3, 4, 4, seed=15), constant(1, 1, 4, 4, seed=18)


def residual_block(x):
    shortcut = tf.nn.relu(tf.nn.conv2d(x, W1, 1, "SAME"))
    branch = tf.nn.relu(tf.nn.conv2d(shortcut, W2, 1, "SAME"))
    return tf.nn.relu(tf.nn.conv2d(branch, W3, 1, "SAME") + shortcut), tf.reduce_mean(shortcut, axis=[1, 2])


def test_an_add_relu_after_a_conv_is_fused_as_its_sum_and_the_summands_other_readers_run_first():
    result = lowered(residual_block, (6, 6, 4))
    (fused,) = [n for n in result.graph_def.node if b"Sum" in n.attr["fused_ops"].list.s]
    assert [bool(u.summand) for u in result.emitted] == [False, False, True]
    assert any(is_control_input(i) for i in fused.input)  # the fp32 Mean of the summand runs before the sum overwrites it
    assert "AddV2" not in result.ops() and result.within_steps()


def test_x_plus_conv_of_x_keeps_its_add_fp32():
    result = lowered(lambda x: tf.nn.relu(tf.nn.conv2d(x, W1, 1, "SAME") + x), (6, 6, 4), low=0.0)
    (unit,) = result.emitted
    assert not unit.summand and "AddV2" in result.ops() and result.within_steps()


def test_the_add_is_claimed_by_its_conv_whichever_input_it_is_when_the_other_is_a_conv_too():
    def fn(x):
        shortcut = tf.nn.bias_add(tf.nn.conv2d(x, W1, 1, "SAME"), tf.ones(4))  # another biased conv, read twice
        branch = tf.nn.relu(tf.nn.conv2d(shortcut, W3, 1, "SAME"))  # 1x1: the signed shortcut is read shifted
        return tf.add(shortcut, tf.nn.conv2d(branch, W2, 1, "SAME"))  # the summand comes first

    result = lowered(fn, (6, 6, 4))
    (unit,) = [u for u in result.units if u.summand]
    assert unit.anchor == result.units[-1].anchor and unit.summand.startswith(result.units[0].output)
    assert "AddV2" not in result.ops() and result.within_steps()
