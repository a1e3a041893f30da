"""How activations and weights are encoded for oneDNN's int8 kernels.

Two rules, both about CPUs without VNNI (this one) but exact everywhere:
- weights that meet an unsigned input are scaled so that no input-channel pair (2k, 2k+1) can
  saturate the int16 sum oneDNN forms there;
- a signed tensor read only by convolutions that do not pad (and MatMuls) is kept as unsigned codes
  of x - low, and each reader adds low * sum(weights) to its bias: oneDNN would otherwise halve
  the weights of a convolution with a signed input.
"""

import numpy as np
import pytest
import tensorflow as tf

import kquant
from kquant.quantization.encoding import zero_exact
from kquant.quantization.weights import quantize_weights


def conv_model(keras, *layers, channels=8, seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((10, 10, channels), name="x"), *layers])


def quantize_v2_modes(qmodel):
    return sorted(n.attr["mode"].s.decode() for n in qmodel.graph_def.node if n.op == "QuantizeV2")


def conv_inputs(qmodel):
    return [n.attr["Tinput"].type for n in qmodel.graph_def.node if n.op.startswith("_FusedQuantized")]


def test_an_input_channel_pair_at_full_scale_does_not_saturate():
    import keras

    weights = np.zeros((1, 1, 8, 1), np.float32)
    weights[0, 0, :2, 0] = 1.0  # channels 0 and 1 form one pair: 255 * 127 * 2 overflows int16
    model = conv_model(keras, keras.layers.Conv2D(1, 1, activation="relu"))
    model.layers[0].set_weights([weights, np.zeros(1, np.float32)])
    x = np.ones((4, 10, 10, 8), np.float32)
    qmodel = kquant.quantize(model, x, progress=False)
    np.testing.assert_allclose(qmodel.predict(x), 2.0, rtol=0.01)  # saturated, it came out as 1.01


def test_pair_safe_scale_bounds_every_same_sign_pair_and_costs_nothing_without_pairs():
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(3, 3, 7, 5)).astype(np.float32)  # odd channel count: the last pair is padded
    q, _ = quantize_weights(weights, 5, per_channel=True, pair_safe=True)
    padded = np.concatenate([q.astype(np.int32), np.zeros((3, 3, 1, 5), np.int32)], axis=2).reshape(3, 3, 4, 2, 5)
    assert np.maximum(padded, 0).sum(axis=3).max() <= 128 and np.maximum(-padded, 0).sum(axis=3).max() <= 128
    single = weights[:, :, :1]
    assert np.array_equal(quantize_weights(single, 5, True, pair_safe=True)[0], quantize_weights(single, 5, True)[0])


@pytest.mark.parametrize("low,high", [(-1.0, 1.0), (-0.3, 5.7), (-7.16, 10.8), (-1e-6, 3e-6)])
def test_shifted_range_holds_zero_exactly(low, high):
    new_low, new_high = zero_exact(low, high)
    step = (new_high - new_low) / 255
    assert new_low <= 0 <= new_high and abs(-new_low / step - round(-new_low / step)) < 1e-6
    assert new_high - new_low == pytest.approx(high - low) and abs(new_low - low) <= step / 2 + 1e-12


def test_signed_input_of_an_unpadded_conv_is_read_unsigned_and_stays_exact():
    import keras

    model = conv_model(keras, keras.layers.Conv2D(6, 3, padding="valid"), keras.layers.Conv2D(4, 1))
    x = np.random.default_rng(0).normal(0.3, 1.0, (64, 10, 10, 8)).astype(np.float32)  # signed input
    qmodel = kquant.quantize(model, x[:32], progress=False)
    assert quantize_v2_modes(qmodel) == ["MIN_FIRST"]
    assert conv_inputs(qmodel) == [tf.quint8.as_datatype_enum] * 2  # the signed conv output is shifted too
    ref = model.predict(x[32:], verbose=0)
    assert np.sqrt(np.mean((qmodel.predict(x[32:]) - ref) ** 2)) < 0.01 * np.abs(ref).max()


def test_a_padding_conv_keeps_its_input_signed_and_a_1x1_reader_of_the_same_tensor_gets_it_shifted():
    import keras

    keras.utils.set_random_seed(0)
    x_in = keras.Input((10, 10, 8), name="x")
    a = keras.layers.Conv2D(4, 3, padding="same")(x_in)
    b = keras.layers.Conv2D(4, 1)(x_in)
    model = keras.Model(x_in, keras.layers.Concatenate()([a, b]))
    x = np.random.default_rng(1).normal(size=(48, 10, 10, 8)).astype(np.float32)
    qmodel = kquant.quantize(model, x[:32], progress=False)
    assert quantize_v2_modes(qmodel) == ["MIN_FIRST", "SCALED"]
    assert sorted(conv_inputs(qmodel)) == sorted([tf.quint8.as_datatype_enum, tf.qint8.as_datatype_enum])
    ref = model.predict(x[32:], verbose=0)
    assert np.sqrt(np.mean((qmodel.predict(x[32:]) - ref) ** 2)) < 0.01 * np.abs(ref).max()


def test_a_shifted_depthwise_output_feeds_its_pointwise_conv_and_dequantizes_right():
    import keras

    model = conv_model(keras, keras.layers.SeparableConv2D(6, 3, padding="same"))  # depthwise -> 1x1 conv
    x = np.random.default_rng(2).random((48, 10, 10, 8), dtype=np.float32)
    qmodel = kquant.quantize(model, x[:32], progress=False)
    kinds = {n.op: n for n in qmodel.graph_def.node}
    assert kinds["_FusedQuantizedDepthwiseConv2D"].attr["out_type"].type == tf.quint8.as_datatype_enum
    assert kinds["_FusedQuantizedConv2D"].attr["Tinput"].type == tf.quint8.as_datatype_enum
    ref = model.predict(x[32:], verbose=0)
    assert np.sqrt(np.mean((qmodel.predict(x[32:]) - ref) ** 2)) < 0.01 * np.abs(ref).max()


def test_a_strided_1x1_conv_runs_as_a_padded_strided_kernel_and_repeats_exactly():
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((61, 61, 8), name="x"), keras.layers.ReLU(),  # odd size: ceil(61 / 2) = 31
                              keras.layers.Conv2D(32, 1, strides=2, padding="same")])
    x = np.random.default_rng(3).random((100, 61, 61, 8), dtype=np.float32)
    qmodel = kquant.quantize(model, x[:32], progress=False)
    conv = next(n for n in qmodel.graph_def.node if n.op == "_FusedQuantizedConv2D")
    nodes = {n.name: n for n in qmodel.graph_def.node}
    pad = nodes[conv.input[1]]  # the file keeps the 1x1 weights; TF folds the Pad to a 2x2 kernel when it loads
    assert pad.op == "Pad" and tf.make_ndarray(nodes[pad.input[0]].attr["value"].tensor).shape[:2] == (1, 1)
    assert tf.make_ndarray(nodes[pad.input[1]].attr["value"].tensor).tolist() == [[0, 1], [0, 1], [0, 0], [0, 0]]
    assert conv.attr["padding"].s == b"EXPLICIT" and list(conv.attr["explicit_paddings"].list.i) == [0, 0, 0, 1, 0, 1, 0, 0]
    first, second = qmodel.predict(x), qmodel.predict(x)
    assert np.array_equal(first, second)  # oneDNN's strided int8 1x1 kernel did not, on 60x60x8 inputs
    ref = model.predict(x, verbose=0)
    assert first.shape == ref.shape and np.sqrt(np.mean((first - ref) ** 2)) < 0.01 * np.abs(ref).max()


def test_borders_run_tensorflows_portable_quantize_kernels_with_exact_rounding():
    import keras

    keras.utils.set_random_seed(0)
    x_in = keras.Input((10, 10, 8), name="x")
    a = keras.layers.Conv2D(4, 3, padding="same")(x_in)             # signed input, pads: qint8 QuantizeV2
    b = keras.layers.Conv2D(4, 1, activation="relu")(x_in)          # shifted input: MIN_FIRST QuantizeV2
    model = keras.Model(x_in, [a, b])                               # a shifted and a quint8 output
    x = np.random.default_rng(4).normal(size=(16, 10, 10, 8)).astype(np.float32)
    qmodel = kquant.quantize(model, x, progress=False)
    signed = next(n for n in qmodel.graph_def.node if n.op == "QuantizeV2" and n.attr["T"].type == tf.qint8.as_datatype_enum)
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(qmodel.graph_def, name="")
    options = tf.compat.v1.RunOptions(output_partition_graphs=True)
    metadata = tf.compat.v1.RunMetadata()
    with tf.compat.v1.Session(graph=graph) as session:
        codes, bound, *_ = session.run([f"{signed.name}:0", f"{signed.name}:2", *qmodel.graph.output_names], {"x:0": x},
                                       options=options, run_metadata=metadata)
    ran = {node.op for partition in metadata.partition_graphs for node in partition.node}
    assert "QuantizeV2" in ran and "Dequantize" in ran
    assert not ran & {"_MklQuantizeV2", "_MklDequantize"}  # about 200 us a call here, whatever the size
    exact = np.clip(np.round(x.astype(np.float64) * 127 / bound), -127, 127)
    assert np.array_equal(codes.astype(np.int64), exact)  # oneDNN's QuantizeV2 was one off for 30 % of values


@pytest.mark.parametrize("pool,op", [("MaxPooling2D", "QuantizedMaxPool"), ("AveragePooling2D", "QuantizedAvgPool")])
def test_a_pool_between_a_shifted_output_and_its_reader_keeps_the_shift(pool, op):
    import keras

    model = conv_model(keras, keras.layers.Conv2D(8, 3), getattr(keras.layers, pool)(3, 2, padding="same"),
                       keras.layers.Conv2D(4, 1), keras.layers.Flatten(), keras.layers.Dense(3))
    x = np.random.default_rng(5).normal(size=(64, 10, 10, 8)).astype(np.float32)
    qmodel = kquant.quantize(model, x[:32], progress=False)
    assert qmodel.op_counts()[op] == 1
    assert conv_inputs(qmodel) == [tf.quint8.as_datatype_enum] * 2
    ref = model.predict(x[32:], verbose=0)
    assert np.abs(qmodel.predict(x[32:]) - ref).max() < 0.08 * np.abs(ref).max()  # 0.69 when the pool dropped it


def test_public_kernels_keep_a_strided_1x1_conv_as_it_is():
    import keras

    model = conv_model(keras, keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
                       keras.layers.Conv2D(16, 1, strides=2, activation="relu"), keras.layers.Flatten(), keras.layers.Dense(3))
    x = np.random.default_rng(6).random((48, 10, 10, 8), dtype=np.float32)
    qmodel = kquant.quantize(model, x[:32], kernels="public", progress=False)  # the public ops take no EXPLICIT pads
    assert qmodel.op_counts()["QuantizedConv2DWithBiasAndReluAndRequantize"] == 2 and "Pad" not in qmodel.op_counts()
    ref = model.predict(x[32:], verbose=0)
    assert np.abs(qmodel.predict(x[32:]) - ref).max() < 0.05 * np.abs(ref).max()


@pytest.mark.parametrize("activation", ["relu", "relu6"])
def test_a_relu_read_only_by_int8_ops_is_done_by_its_unsigned_quantize(activation):
    import keras

    keras.utils.set_random_seed(0)
    x_in = keras.Input((10, 10, 8), name="x")
    y = keras.layers.Conv2D(6, 3)(keras.layers.Activation(activation)(keras.layers.Add()([x_in, x_in])))
    model = keras.Model(x_in, y)
    x = np.random.default_rng(3).normal(0, 2.0, (48, 10, 10, 8)).astype(np.float32)  # half negative, some over 6
    qmodel = kquant.quantize(model, x[:32], progress=False)
    ops = [n.op for n in qmodel.graph_def.node]
    assert "Relu" not in ops and "Relu6" not in ops and ops.count("QuantizeV2") == 1
    ref = model.predict(x[32:], verbose=0)
    assert np.sqrt(np.mean((qmodel.predict(x[32:]) - ref) ** 2)) < 0.01 * np.abs(ref).max()
