"""ConcatV2 of int8 branches -> QuantizedConcat onto the union of their ranges; against QDQ."""

import tensorflow as tf

from .conftest import constant, lowered

A, B, C = constant(3, 3, 4, 5, seed=9), constant(1, 1, 4, 3, seed=10), constant(1, 1, 8, 2, seed=11)


def two_branches(x, axis=-1):
    joined = tf.concat([tf.nn.relu(tf.nn.conv2d(x, A, 1, "SAME")), tf.nn.relu(tf.nn.conv2d(x, B, 1, "SAME"))], axis)
    return tf.nn.conv2d(joined, C, 1, "SAME")


def test_two_relu_branches_concatenate_in_int8_with_a_positive_axis():
    result = lowered(two_branches, (6, 6, 4))
    assert [u.family for u in result.emitted].count("concat") == 1
    (concat,) = [n for n in result.graph_def.node if n.op == "QuantizedConcat"]
    axis = next(n for n in result.graph_def.node if n.name == concat.input[0])
    assert axis.attr["value"].tensor.int_val == [3]  # -1 counted from the front
    assert result.within_steps()


def test_a_signed_branch_keeps_the_concat_fp32():
    def fn(x):
        joined = tf.concat([tf.nn.relu(tf.nn.conv2d(x, A, 1, "SAME")), tf.nn.conv2d(x, B, 1, "SAME")], -1)
        return tf.nn.conv2d(joined, C, 1, "SAME")

    result = lowered(fn, (6, 6, 4))
    assert "concat" in [u.family for u in result.units] and "concat" not in [u.family for u in result.emitted]
    # the fp32 concat is signed: the padding conv after it reads qint8, whose weights oneDNN halves without VNNI
    assert "ConcatV2" in result.ops() and result.within_steps(max_steps=12)
