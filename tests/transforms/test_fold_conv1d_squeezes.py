"""fold_conv1d_squeezes: 1-D convolutions and poolings run as one chain of 4-D ops, each conv followed by its bias and activation."""

import numpy as np
import pytest
import tensorflow as tf

import kquant
from kquant.transforms import optimize_for_inference_trans

from .conftest import (
    Case,
    assert_ops,
    case_from_function,
    constant,
    count_ops,
    randomize_batch_norms,
    transformed,
)


def conv1d_net(keras):
    """Conv1D with ReLU, a causal Conv1D without bias + BatchNormalization, both 1-D poolings, a linear Conv1D, Flatten."""
    layers = keras.layers
    keras.utils.set_random_seed(0)
    inputs = keras.Input((24, 5), name="series")
    x = layers.Conv1D(8, 3, padding="same", activation="relu")(inputs)
    x = layers.MaxPooling1D(2)(x)
    x = layers.Conv1D(8, 3, padding="causal", use_bias=False)(x)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    x = layers.AveragePooling1D(2)(x)
    x = layers.Conv1D(6, 1)(x)
    model = keras.Model(inputs, layers.Dense(3, name="out")(layers.Flatten()(x)))
    randomize_batch_norms(model)
    return model


def keras_case(keras) -> Case:
    model = conv1d_net(keras)
    x = np.random.default_rng(0).standard_normal((3, 24, 5)).astype(np.float32)
    return Case(kquant.freeze(model), [x], [model(x, training=False).numpy()])


@pytest.mark.parametrize("library", ["keras", "tf_keras"])
def test_conv1d_layers_stay_4d_with_bias_and_activation_after_each_conv(library):
    case = keras_case(pytest.importorskip(library))
    before = count_ops(transformed(case, [t for t in optimize_for_inference_trans if t != "fold_conv1d_squeezes"]))
    assert before["Squeeze"] == 5 and before["ExpandDims"] == 5  # each 1-D layer leaves 4-D and enters it again
    result = transformed(case, optimize_for_inference_trans)
    # one ExpandDims at the input, no Squeeze (Flatten reads the conv), the causal Pad in the conv, the batch norm folded
    assert_ops(result, ExpandDims=1, Squeeze=0, Pad=0, Mul=0, Conv2D=3, BiasAdd=4, Relu=2, MaxPool=1, AvgPool=1)
    nodes = {n.name: n for n in result.graph_def.node}
    readers = {n.name: [nodes[i.split(":")[0]].op for i in n.input] for n in result.graph_def.node}
    assert all(ops[0] == "Conv2D" for name, ops in readers.items() if nodes[name].op == "BiasAdd" and ops[0] != "MatMul")


def test_quantized_conv1d_chain_has_no_borders_inside():
    import keras

    case = keras_case(keras)
    x = np.random.default_rng(1).standard_normal((64, 24, 5)).astype(np.float32)
    counts = kquant.quantize(case.frozen, x, progress=False).op_counts()
    assert counts["_FusedQuantizedConv2D"] == 3 and counts.get("Dequantize", 0) == 0 and counts["QuantizeV2"] == 1
    assert not {"BiasAdd", "Relu", "Squeeze"} & set(counts)


@pytest.mark.parametrize("make", [
    lambda y: tf.squeeze(y, 1) + tf.reduce_sum(tf.squeeze(y, 1)),          # the Squeeze has two readers
    lambda y: tf.nn.relu(tf.squeeze(y[..., :1], -1)),                      # it drops the channel axis
    lambda y: constant(6) - tf.squeeze(y, 1),                              # the constant comes first in a Sub
    lambda y: tf.squeeze(y, 1) * constant(7, 6),                           # the constant varies along time too
    lambda y: tf.nn.bias_add(tf.squeeze(y, 1), tf.reduce_mean(y, [0, 1, 2])),  # the bias is computed
], ids=["two_readers", "channel_axis", "constant_first", "two_d_constant", "computed_bias"])
def test_squeezes_it_cannot_move_are_left_alone(make):
    case = case_from_function(lambda x: make(tf.nn.conv2d(x, constant(1, 3, 4, 6), 1, "SAME")), (1, 7, 4))
    assert count_ops(transformed(case, "fold_conv1d_squeezes")) == count_ops(case.frozen)


def test_per_channel_ops_move_below_the_squeeze():
    def net(x):
        y = tf.squeeze(tf.nn.conv2d(x, constant(1, 3, 4, 6), 1, "SAME"), 1)
        y = tf.nn.relu6(tf.nn.bias_add(y, constant(6)) * constant(6, seed=1) - 0.5)
        y = tf.pad(tf.maximum(y, constant(6, seed=2)), [[0, 0], [2, 0], [0, 0]])
        return tf.nn.conv2d(tf.expand_dims(y, -3), constant(1, 3, 6, 2, seed=3), 1, "VALID")

    case = case_from_function(net, (1, 7, 4))
    result = transformed(case, "fold_conv1d_squeezes")
    assert_ops(result, Squeeze=0, ExpandDims=0, Pad=1)
    nodes = {n.name: n for n in result.graph_def.node}
    node, chain = next(n for n in result.graph_def.node if n.op == "Conv2D" and n.input[0] != "x0"), []
    while node.op != "Placeholder":
        node = nodes[node.input[0].split(":")[0]]
        chain.append(node.op)
    assert chain == ["Pad", "Maximum", "Relu6", "Sub", "Mul", "BiasAdd", "Conv2D", "Placeholder"]


def test_graph_outputs_keep_their_shape():
    case = case_from_function(lambda x: tf.nn.relu(tf.squeeze(tf.nn.conv2d(x, constant(1, 3, 4, 6), 1, "SAME"), 1)), (1, 7, 4))
    result = transformed(case, "fold_conv1d_squeezes")  # transformed() checks the output's shape and values
    assert_ops(result, Squeeze=1)
