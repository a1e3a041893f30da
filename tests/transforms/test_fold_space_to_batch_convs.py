"""fold_space_to_batch_convs: a dilated convolution's SpaceToBatchND -> Conv2D -> BatchToSpaceND becomes one dilated Conv2D."""

import numpy as np
import pytest
import tensorflow as tf

import kquant
from kquant.graphdef import const_value
from kquant.transforms import optimize_for_inference_trans
from tests.quantization.test_random_architectures import assert_tracks_exact_8bit

from .conftest import (
    Case,
    assert_ops,
    case_from_function,
    constant,
    count_ops,
    transformed,
)


def conv_attrs(graph, op="Conv2D"):
    return [(list(n.attr["dilations"].list.i), n.attr["padding"].s.decode(), list(n.attr["explicit_paddings"].list.i))
            for n in graph.graph_def.node if n.op == op]


@pytest.mark.parametrize("padding, rate, expected", [
    ("SAME", 2, ("EXPLICIT", [0, 0, 2, 2, 2, 2, 0, 0])),
    ("SAME", (3, 2), ("EXPLICIT", [0, 0, 3, 3, 2, 2, 0, 0])),
    ("VALID", 2, ("VALID", [])),
], ids=["same", "same_rates_3_2", "valid"])
@pytest.mark.parametrize("op", ["Conv2D", "DepthwiseConv2dNative"])
def test_dilated_conv_becomes_one_conv(op, padding, rate, expected):
    """A depthwise conv takes its padding as a Pad before it: TensorFlow can abort on a public one with padding="EXPLICIT"."""
    rates = (rate, rate) if isinstance(rate, int) else rate
    if op == "Conv2D":
        case = case_from_function(lambda x: tf.nn.convolution(x, constant(3, 3, 4, 6), padding=padding, dilations=rates), (15, 13, 4))
    else:
        case = case_from_function(lambda x: tf.nn.depthwise_conv2d(x, constant(3, 3, 4, 2), [1, 1, 1, 1], padding, dilations=rates),
                                  (15, 13, 4))
    assert count_ops(case.frozen)["SpaceToBatchND"] == 1
    result = transformed(case, "fold_space_to_batch_convs")
    assert_ops(result, SpaceToBatchND=0, BatchToSpaceND=0, **{op: 1})
    if op == "DepthwiseConv2dNative" and expected[0] == "EXPLICIT":
        pads = [const_value(n) for n in result.graph_def.node if n.op == "Const" and n.name.endswith("/paddings")]
        assert [p.reshape(-1).tolist() for p in pads] == [expected[1]]
        assert_ops(result, Pad=1)
        expected = ("VALID", [])
    assert conv_attrs(result, op) == [([1, *rates, 1], *expected)]


@pytest.mark.parametrize("library", ["keras", "tf_keras"])
def test_dilated_keras_layers_run_as_dilated_convs_with_their_bias(library):
    keras = pytest.importorskip(library)
    layers = keras.layers
    keras.utils.set_random_seed(0)
    image = keras.Input((17, 14, 3))
    x = layers.Conv2D(8, 3, dilation_rate=2, padding="same", activation="relu")(image)
    x = layers.Conv2D(4, 3, dilation_rate=(1, 3), activation="relu")(x)
    series = keras.Input((30, 5))
    y = layers.Conv1D(6, 3, dilation_rate=2, padding="causal", activation="relu")(series)
    y = layers.Conv1D(6, 3, dilation_rate=4, padding="same")(y)
    model = keras.Model([image, series], [layers.Flatten()(x), layers.Flatten()(y)])
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((2, 17, 14, 3)).astype(np.float32), rng.standard_normal((2, 30, 5)).astype(np.float32)]
    case = Case(kquant.freeze(model), inputs, [o.numpy() for o in model(inputs)])
    result = transformed(case, optimize_for_inference_trans)
    assert_ops(result, SpaceToBatchND=0, BatchToSpaceND=0, Squeeze=0, Pad=0, Conv2D=4, BiasAdd=4)
    assert sorted(max(d) for d, _, _ in conv_attrs(result)) == [2, 2, 3, 4]


@pytest.mark.parametrize("shape, make_layers, convs", [
    ((16, 16, 6), lambda layers: [layers.Conv2D(8, 3, dilation_rate=2, padding="same", activation="relu"),
                                  layers.Conv2D(8, 3, dilation_rate=3, activation="relu"), layers.Flatten()], 2),
    ((40, 6), lambda layers: [layers.Conv1D(8, 3, padding="causal", dilation_rate=rate, activation="relu")
                              for rate in (1, 2, 4)] + [layers.Flatten()], 3),
    ((17, 15, 6), lambda layers: [layers.DepthwiseConv2D(3, dilation_rate=2, padding="same", activation="relu"),
                                  layers.SeparableConv2D(8, 3, dilation_rate=3, activation="relu"), layers.Flatten()], 1),
], ids=["conv2d", "tcn_conv1d", "depthwise_separable"])
def test_quantized_dilated_convs_form_one_int8_chain(shape, make_layers, convs):
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input(shape), *make_layers(keras.layers), keras.layers.Dense(4)])
    x = np.random.default_rng(0).normal(0.2, 1.0, (80, *shape)).astype(np.float32)
    qmodel = kquant.quantize(model, x[:64], progress=False)
    counts = qmodel.op_counts()
    assert counts["_FusedQuantizedConv2D"] == convs and counts["QuantizeV2"] == 1
    assert not {"Dequantize", "BiasAdd", "Relu", "Pad", "SpaceToBatchND", "Squeeze"} & set(counts), counts
    assert_tracks_exact_8bit(model, x)  # within 2x the RMS error of an exact 8-bit simulation, repeatable


def conv_plus_mean(blocks):
    return tf.nn.conv2d(blocks, constant(3, 3, 4, 6), 1, "VALID") + tf.reduce_mean(blocks)


@pytest.mark.parametrize("make", [
    lambda x: conv_plus_mean(tf.space_to_batch_nd(x, [2, 2], [[1, 2], [2, 1]])),
    lambda x: tf.batch_to_space(tf.nn.conv2d(tf.space_to_batch_nd(x, [2, 2], [[0, 1], [1, 0]]), constant(3, 3, 4, 6), 1, "VALID"),
                                [2, 2], [[1, 0], [0, 0]]),
], ids=["space_to_batch_read_twice", "crops_larger_than_padding"])
def test_chains_it_cannot_fold_are_left_alone(make):
    case = case_from_function(make, (15, 13, 4))
    assert count_ops(transformed(case, "fold_space_to_batch_convs")) == count_ops(case.frozen)
