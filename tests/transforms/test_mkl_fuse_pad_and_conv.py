"""mkl_fuse_pad_and_conv: a zero Pad before a conv becomes the conv's explicit padding."""

import numpy as np
import pytest
import tensorflow as tf

import kquant

from .conftest import Case, assert_ops, case_from_function, constant, count_ops, transformed

PADS = [[0, 0], [2, 1], [0, 3], [0, 0]]


def explicit_paddings(graph, op):
    node = next(n for n in graph.graph_def.node if n.op == op)
    return node.attr["padding"].s.decode(), list(node.attr["explicit_paddings"].list.i)


@pytest.mark.parametrize("op, conv", [
    ("Conv2D", lambda y: tf.nn.conv2d(y, constant(3, 3, 3, 4), 2, "VALID")),
    ("Conv2D", lambda y: tf.nn.conv2d(y, constant(3, 3, 3, 4), 1, [[0, 0], [1, 0], [1, 1], [0, 0]])),
], ids=["conv_valid", "conv_explicit"])
def test_pad_folds_into_the_conv(op, conv):
    case = case_from_function(lambda x: conv(tf.pad(x, PADS)), (7, 7, 3))
    before = explicit_paddings(case.frozen, op)[1] or [0] * 8
    result = transformed(case, "mkl_fuse_pad_and_conv")
    assert_ops(result, Pad=0)
    assert explicit_paddings(result, op) == ("EXPLICIT", [a + b for a, b in zip(before, sum(PADS, []))])


def test_keras_zero_padding_before_a_valid_conv_folds():
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((9, 9, 2)), keras.layers.ZeroPadding2D(((1, 2), (0, 1))), keras.layers.Conv2D(3, 3)])
    x = np.random.default_rng(0).standard_normal((2, 9, 9, 2)).astype(np.float32)
    case = Case(kquant.freeze(model), [x], [model(x).numpy()])
    assert_ops(transformed(case, "remove_freeze_leftovers fold_constants mkl_fuse_pad_and_conv"), Pad=0, Conv2D=1)


@pytest.mark.parametrize("make", [
    lambda x: tf.nn.conv2d(tf.pad(x, [[1, 0], [1, 1], [1, 1], [0, 0]]), constant(3, 3, 3, 4), 1, "VALID"),
    lambda x: tf.nn.conv2d(tf.pad(x, PADS), constant(3, 3, 3, 4), 1, "SAME"),
    lambda x: tf.nn.conv2d(tf.pad(x, PADS, constant_values=1.0), constant(3, 3, 3, 4), 1, "VALID"),
    lambda x: tf.nn.conv2d(tf.pad(x, PADS, "REFLECT"), constant(3, 3, 3, 4), 1, "VALID"),
    lambda x: (lambda y: tf.nn.conv2d(y, constant(3, 3, 3, 4), 1, "VALID") + tf.reduce_sum(y))(tf.pad(x, PADS)),
    lambda x: tf.nn.depthwise_conv2d(tf.pad(x, PADS), constant(3, 3, 3, 2), [1, 1, 1, 1], "VALID"),
], ids=["batch_padding", "same_conv", "nonzero_value", "reflect", "pad_read_twice", "depthwise"])
def test_pads_it_cannot_fold_are_left_alone(make):
    case = case_from_function(make, (7, 7, 3))
    assert count_ops(transformed(case, "mkl_fuse_pad_and_conv")) == count_ops(case.frozen)
