"""kquant.quantize / QuantizedModel / GraphConverter / CLI on small models built here."""

import collections

import numpy as np
import pytest
import tensorflow as tf

import kquant
from kquant.errors import CalibrationDataError, OutputWriteError


def small_cnn(keras_module, seed=0):
    keras_module.utils.set_random_seed(seed)
    layers = keras_module.layers
    return keras_module.Sequential([
        layers.Input((12, 12, 3), name="image") if hasattr(layers, "Input") else layers.InputLayer((12, 12, 3), name="image"),
        layers.Conv2D(8, 3, activation="relu", padding="same"),
        layers.DepthwiseConv2D(3, padding="same"),
        layers.ReLU(max_value=6.0),
        layers.MaxPooling2D(),
        layers.Flatten(),
        layers.Dense(16, activation="relu"),
        layers.Dense(4),
    ])


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).random((96, 12, 12, 3), dtype=np.float32)


@pytest.fixture(scope="module")
def keras3_model():
    import keras

    return small_cnn(keras)


@pytest.fixture(scope="module")
def keras3_int8(keras3_model, images):
    return kquant.quantize(keras3_model, images[:64], stem="int8", progress=False)  # every conv in int8


def close_in_steps(got, ref, steps=6):
    """Within ``steps`` quantization steps of the output range."""
    return np.abs(got - ref).max() <= steps * np.abs(ref).max() / 127


def test_keras3_model_quantizes_and_tracks_fp32_on_unseen_data(keras3_model, keras3_int8, images):
    ref = keras3_model.predict(images[64:], verbose=0)
    assert close_in_steps(keras3_int8.predict(images[64:]), ref)
    ops = keras3_int8.op_counts()
    assert ops["_FusedQuantizedConv2D"] == 1 and ops["_FusedQuantizedDepthwiseConv2D"] == 1 and ops["_QuantizedMatMul"] == 2


def test_tf_keras_model_quantizes_with_its_image_stem_kept_fp32(images):
    import tf_keras

    model = small_cnn(tf_keras)
    qmodel = kquant.quantize(model, images[:64], progress=False)
    assert close_in_steps(qmodel.predict(images[64:]), model.predict(images[64:], verbose=0))
    ops = qmodel.op_counts()
    assert ops.get("_FusedQuantizedConv2D", 0) == 0 and ops["Conv2D"] == 1
    assert ops["_FusedQuantizedDepthwiseConv2D"] == 1 and ops["_QuantizedMatMul"] == 2
    assert qmodel.result.stems == (next(n.name for n in qmodel.graph_def.node if n.op == "Conv2D"),)
    assert "fp32 image stem: " in qmodel.summary()


def test_dynamic_batch_dimension(keras3_model, keras3_int8, images):
    for n in (1, 7, 33):
        got = keras3_int8.predict(images[:n])
        assert got.shape == (n, 4)
        assert close_in_steps(got, keras3_model.predict(images[:n], verbose=0))


def test_calibration_data_forms_give_the_same_graph(keras3_model, images):
    calib = images[:32]
    reference = kquant.quantize(keras3_model, calib, progress=False).graph_def.SerializeToString(deterministic=True)
    forms = [
        {"image": calib},
        tf.data.Dataset.from_tensor_slices(calib).batch(8),
        tf.data.Dataset.from_tensor_slices((calib, np.zeros(32))).batch(8),
        (calib[i:i + 8] for i in range(0, 32, 8)),
        [calib[:16], calib[16:]],
    ]
    for form in forms:
        graph = kquant.quantize(keras3_model, form, progress=False).graph_def.SerializeToString(deterministic=True)
        assert graph == reference, type(form)


def test_several_inputs_and_outputs():
    import keras

    keras.utils.set_random_seed(0)
    a, b = keras.Input((6,), name="a"), keras.Input((4,), name="b")
    h = keras.layers.Dense(16, activation="relu")(keras.layers.Concatenate()([a, b]))
    model = keras.Model([a, b], [keras.layers.Dense(3, name="first")(h), keras.layers.Dense(2, name="second")(h)])
    rng = np.random.default_rng(0)
    xa, xb = rng.standard_normal((80, 6)).astype(np.float32), rng.standard_normal((80, 4)).astype(np.float32)
    qmodel = kquant.quantize(model, {"a": xa[:64], "b": xb[:64]}, progress=False)
    first, second = qmodel.predict([xa[64:], xb[64:]])
    ref_first, ref_second = model.predict([xa[64:], xb[64:]], verbose=0)
    assert close_in_steps(first, ref_first) and close_in_steps(second, ref_second)
    assert [o.node for o in qmodel.outputs] == ["first", "second"]


def test_save_pb_and_pbtxt_and_export_savedmodel(keras3_model, keras3_int8, images, tmp_path):
    expected = keras3_int8.predict(images[:5])
    for name in ("int8.pb", "int8.pbtxt"):
        path = keras3_int8.save(tmp_path / name)
        with kquant.GraphRunner(kquant.load_graph_def(path), ["image:0"], [keras3_int8.outputs[0].name]) as run:
            np.testing.assert_array_equal(run(images[:5])[0], expected)
    exported = keras3_int8.export(tmp_path / "saved")
    serving = tf.saved_model.load(str(exported)).signatures["serving_default"]
    (value,) = serving(image=tf.constant(images[:5])).values()
    np.testing.assert_allclose(value.numpy(), expected, atol=1e-6)
    with pytest.raises(OutputWriteError):
        keras3_int8.export(exported)


def test_int8_graph_holds_no_two_identical_constants(keras3_int8):
    seen = collections.Counter((n.attr["dtype"].type, n.attr["value"].tensor.SerializeToString())
                               for n in keras3_int8.graph_def.node if n.op == "Const")
    assert seen and max(seen.values()) == 1


def test_merge_duplicates_merges_identical_nodes_but_not_the_ones_it_must_keep():
    from kquant.graph import FrozenGraph, TensorSpec
    from kquant.quantization.pipeline import merge_duplicates

    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 3], name="x")
        tf.add(tf.multiply(x, tf.constant(2.0), name="a"), tf.multiply(x, tf.constant(2.0), name="b"), name="c")
    frozen = FrozenGraph(graph.as_graph_def(), (TensorSpec("x:0", "float32", (None, 3)),),
                         (TensorSpec("c:0", "float32", (None, 3)),))
    merged = merge_duplicates(frozen).graph_def
    assert sorted(n.op for n in merged.node) == ["AddV2", "Const", "Mul", "Placeholder"]
    with kquant.GraphRunner(merged, ["x:0"], ["c:0"]) as run:
        np.testing.assert_array_equal(run(np.ones((1, 3), np.float32))[0], [[4.0, 4.0, 4.0]])
    kept = {n.name for n in merge_duplicates(frozen, keep=["c:0", "b:0"]).graph_def.node}
    assert {"a", "b", "c"} <= kept


def test_saved_file_drops_default_valued_attributes_and_runs_the_same(keras3_int8, images, tmp_path):
    path = keras3_int8.save(tmp_path / "int8.pb")
    assert path.stat().st_size < keras3_int8.graph_def.ByteSize()
    saved = kquant.load_graph_def(path)
    conv = next(n for n in saved.node if n.op == "_FusedQuantizedConv2D")
    in_memory = next(n for n in keras3_int8.graph_def.node if n.name == conv.name)
    assert "Tdevice_inputs" in in_memory.attr and "Tdevice_inputs" not in conv.attr  # its default, the empty list
    with kquant.GraphRunner(saved, ["image:0"], [keras3_int8.outputs[0].name]) as run:
        np.testing.assert_array_equal(run(images[:5])[0], keras3_int8.predict(images[:5]))


def test_calibration_methods_and_per_channel_switch(keras3_model, images):
    for method in ("minmax", "percentile", "kl"):
        qmodel = kquant.quantize(keras3_model, images[:64], calibration=method, progress=False)
        assert close_in_steps(qmodel.predict(images[64:]), keras3_model.predict(images[64:], verbose=0), steps=12), method
    per_tensor = kquant.quantize(keras3_model, images[:64], per_channel=False, stem="int8", progress=False)
    conv = next(n for n in per_tensor.graph_def.node if n.op == "_FusedQuantizedConv2D")
    min_filter = next(n for n in per_tensor.graph_def.node if n.name == conv.input[5])
    assert len(min_filter.attr["value"].tensor.tensor_shape.dim) == 0


def test_excluded_ops_and_nodes_stay_fp32(keras3_model, images):
    qmodel = kquant.quantize(keras3_model, images[:64], excluded_ops=["MatMul"], stem="int8", progress=False)
    ops = qmodel.op_counts()
    assert ops.get("_QuantizedMatMul", 0) == 0 and ops["MatMul"] == 2 and ops["_FusedQuantizedConv2D"] == 1
    conv = next(u for u in qmodel.result.units if u.family == "convolution")
    kept = kquant.quantize(keras3_model, images[:64], excluded_nodes=[conv.anchor], stem="int8", progress=False)
    assert kept.op_counts().get("_FusedQuantizedConv2D", 0) == 0


def test_model_without_quantizable_ops_comes_back_fp32_with_a_warning():
    import keras

    model = keras.Sequential([keras.Input((5,), name="x"), keras.layers.Activation("tanh")])
    x = np.random.default_rng(0).standard_normal((8, 5)).astype(np.float32)
    with pytest.warns(UserWarning, match="no quantizable"):
        qmodel = kquant.quantize(model, x, progress=False)
    np.testing.assert_allclose(qmodel.predict(x), np.tanh(x), atol=1e-6)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((0, 12, 12, 3), np.float32), "empty"),
    (np.zeros((4, 12, 12), np.float32), "rank"),
    (np.zeros((4, 10, 12, 3), np.float32), "shape"),
    (np.full((4, 12, 12, 3), np.nan, np.float32), "NaN"),
    (np.full((4, 12, 12, 3), "a"), "dtype"),
])
def test_bad_calibration_data_is_named(keras3_model, bad, message):
    with pytest.raises(CalibrationDataError, match=message):
        kquant.quantize(keras3_model, bad, progress=False)


def test_graph_converter_with_callable_and_seed_log(keras3_model, images, tmp_path):
    fp32_path = kquant.freeze(keras3_model).save(tmp_path / "fp32.pb")
    out = tmp_path / "int8.pb"
    converter = kquant.GraphConverter(str(fp32_path), str(out), ["image"], None, per_channel=True, stem="int8")
    qmodel = converter.convert(lambda: (images[i:i + 16] for i in range(0, 64, 16)), progress=False)
    assert out.exists() and qmodel.op_counts()["_FusedQuantizedConv2D"] == 1
    conv = next(u for u in qmodel.result.units if u.family == "convolution")
    log = tmp_path / "min_max_log.txt"
    log.write_text(f";{conv.anchor}_eightbit_requant_range__print__;__requant_min_max:[0][0.5]\n")
    logged = kquant.GraphConverter(str(fp32_path), str(tmp_path / "logged.pb"), ["image"], None, stem="int8").convert(
        images[:64], min_max_log=str(log), progress=False)
    nodes = {n.name: n for n in logged.graph_def.node}
    max_output = nodes[nodes[f"{conv.output}_int8"].input[8]]  # inputs: x, filter, bias, 4 ranges, min/max output
    assert max_output.attr["value"].tensor.float_val[0] == pytest.approx(0.5)


def test_cli_quantize_writes_graph_and_savedmodel(keras3_model, images, tmp_path, capsys):
    from kquant.cli import main

    model_path = tmp_path / "model.keras"
    keras3_model.save(model_path)
    np.save(tmp_path / "calib.npy", images[:32])
    code = main(["quantize", str(model_path), "--calib", str(tmp_path / "calib.npy"), "-o", str(tmp_path / "q.pb"),
                 "--export", str(tmp_path / "q_saved"), "--calibration", "percentile", "--stem", "int8", "--no-progress"])
    assert code == 0
    assert "_FusedQuantizedConv2D" in capsys.readouterr().out
    assert (tmp_path / "q.pb").stat().st_size > 0 and (tmp_path / "q_saved" / "saved_model.pb").exists()
    np.savez(tmp_path / "bad.npz", wrong=images[:4])
    assert main(["quantize", str(model_path), "--calib", str(tmp_path / "bad.npz"), "-o", str(tmp_path / "r.pb")]) == 2
    assert capsys.readouterr().err.count("\n") == 1 and not (tmp_path / "r.pb").exists()


def test_public_kernels_path(keras3_model, images):
    qmodel = kquant.quantize(keras3_model, images[:64], kernels="public", stem="int8", progress=False)
    ops = qmodel.op_counts()
    assert ops.get("_FusedQuantizedConv2D", 0) == 0 and ops.get("_QuantizedMatMul", 0) == 0
    assert ops["QuantizedMatMulWithBiasAndReluAndRequantize"] == 1 and ops["QuantizedMatMulWithBiasAndDequantize"] == 1
    # the first conv reads a non-negative image (quint8): public; the depthwise conv has Relu6 -> relu kernel
    assert ops["QuantizedConv2DWithBiasAndReluAndRequantize"] == 1
    assert ops["QuantizedDepthwiseConv2DWithBiasAndReluAndRequantize"] == 1
    assert close_in_steps(qmodel.predict(images[64:]), keras3_model.predict(images[64:], verbose=0))


def test_pad_before_conv_becomes_explicit_padding_of_the_int8_conv():
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((12, 12, 3), name="image"), keras.layers.ZeroPadding2D(2),
                              keras.layers.Conv2D(8, 3, activation="relu"), keras.layers.ZeroPadding2D(((1, 0), (0, 1))),
                              keras.layers.Conv2D(4, 3)])
    x = np.random.default_rng(0).random((40, 12, 12, 3), dtype=np.float32)
    qmodel = kquant.quantize(model, x[:32], stem="int8", progress=False)
    ops = qmodel.op_counts()
    assert ops["_FusedQuantizedConv2D"] == 2 and "Pad" not in ops
    assert close_in_steps(qmodel.predict(x[32:]), model.predict(x[32:], verbose=0))


def residual_cnn(seed=0):
    import keras

    keras.utils.set_random_seed(seed)

    def block(x):
        y = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
        y = keras.layers.Conv2D(16, 3, padding="same")(y)
        return keras.layers.ReLU()(keras.layers.Add()([y, x]))

    inputs = keras.Input((16, 16, 8), name="image")
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    for _ in range(3):
        x = block(x)
    outputs = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, outputs)


def test_residual_add_and_relu_fuse_into_the_conv_as_a_sum():
    model = residual_cnn()
    x = np.random.default_rng(0).random((96, 16, 16, 8), dtype=np.float32)
    qmodel = kquant.quantize(model, x[:64], progress=False)
    ops = qmodel.op_counts()
    assert ops["_FusedQuantizedConv2D"] == 7 and "AddV2" not in ops and "Relu" not in ops
    sums = [n for n in qmodel.graph_def.node if list(n.attr["fused_ops"].list.s) == [b"BiasAdd", b"Sum", b"Relu", b"Requantize"]]
    assert len(sums) == 3
    assert close_in_steps(qmodel.predict(x[64:]), model.predict(x[64:], verbose=0))
    public = kquant.quantize(model, x[:64], kernels="public", progress=False)  # no sum fusion there: Add stays fp32
    assert public.op_counts()["AddV2"] == 3
    assert close_in_steps(public.predict(x[64:]), model.predict(x[64:], verbose=0))


def linear_residual_cnn(reader_kernel):
    """conv -> conv, plus a signed 1x1 shortcut, summed with no activation after (MobileNetV2's form), then a reader."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 8), name="image")
    branch = keras.layers.Conv2D(16, 1)(keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs))
    shortcut = keras.layers.Conv2D(16, 1)(inputs)  # signed: a shifted summand
    added = keras.layers.Add()([branch, shortcut])
    return keras.Model(inputs, keras.layers.Conv2D(4, reader_kernel, padding="same")(added))


def error_against_simulation(model, qmodel, x_calib, x_eval):
    """RMS error of the int8 model and of an exact 8-bit simulation of its plan, against fp32."""
    from kquant.quantization.qdq import qdq_graph_def

    result, fp32 = qmodel.result, qmodel.result.fp32
    with kquant.GraphRunner(qdq_graph_def(fp32, result.units, result.ranges), fp32.input_names, fp32.output_names) as run:
        simulated = run(x_eval)[0]
    reference = model.predict(x_eval, verbose=0)
    return np.sqrt(np.mean((qmodel.predict(x_eval) - reference) ** 2)), np.sqrt(np.mean((simulated - reference) ** 2))


def test_residual_add_without_activation_fuses_as_a_sum_when_its_readers_take_shifted_codes():
    model = linear_residual_cnn(reader_kernel=1)
    x = np.random.default_rng(0).normal(0.0, 1.0, (96, 12, 12, 8)).astype(np.float32)
    qmodel = kquant.quantize(model, x[:64], progress=False)
    assert "AddV2" not in qmodel.op_counts()
    sums = [n for n in qmodel.graph_def.node if b"Sum" in n.attr["fused_ops"].list.s]
    assert len(sums) == 1 and sums[0].attr["Tsummand"].type == tf.quint8.as_datatype_enum
    int8, simulated = error_against_simulation(model, qmodel, x[:64], x[64:])
    assert int8 <= 1.3 * simulated, (int8, simulated)  # measured 1.04


def test_residual_add_without_activation_stays_fp32_when_a_reader_pads():
    model = linear_residual_cnn(reader_kernel=3)  # SAME 3x3: shifted codes would pad with low, not 0.0
    x = np.random.default_rng(0).normal(0.0, 1.0, (96, 12, 12, 8)).astype(np.float32)
    qmodel = kquant.quantize(model, x[:64], progress=False)
    assert qmodel.op_counts()["AddV2"] == 1
    assert not any(b"Sum" in n.attr["fused_ops"].list.s for n in qmodel.graph_def.node)
    int8, simulated = error_against_simulation(model, qmodel, x[:64], x[64:])
    assert int8 <= 1.3 * simulated, (int8, simulated)


def test_public_kernels_keep_a_matmul_fp32_when_its_input_is_signed_int8():
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 3), name="image"), keras.layers.Conv2D(4, 3),  # no activation: signed
                              keras.layers.Flatten(), keras.layers.Dense(5)])
    x = np.random.default_rng(0).random((48, 8, 8, 3), dtype=np.float32)
    qmodel = kquant.quantize(model, x[:32], kernels="public", stem="int8", progress=False)
    ops = qmodel.op_counts()
    assert ops["QuantizedConv2DWithBiasAndRequantize"] == 1 and ops["MatMul"] == 1 and "_QuantizedMatMul" not in ops
    assert close_in_steps(qmodel.predict(x[32:]), model.predict(x[32:], verbose=0))


KERNEL_ACTIVATIONS = {"leaky": "LeakyRelu", "elu": "Elu", "tanh": "Tanh", "sigmoid": "Sigmoid", "relu6": "Relu6",
                      "gelu": "GeluExact", "gelu_tanh": "GeluApproximate"}


def dense_layers(keras, activation, units):
    """A Dense with ``activation``; "leaky" is a LeakyReLU of slope 0.05 after it, "gelu_tanh" the approximate GELU."""
    layers = keras.layers
    if activation == "leaky":
        return [layers.Dense(units), layers.LeakyReLU(negative_slope=0.05)]
    if activation == "gelu_tanh":
        return [layers.Dense(units), layers.Activation(lambda t: keras.activations.gelu(t, approximate=True))]
    return [layers.Dense(units, activation=activation)]


@pytest.mark.parametrize("first, second", [("tanh", "sigmoid"), ("elu", "relu6"), ("leaky", "tanh"), ("gelu", "gelu_tanh")])
def test_dense_activations_fuse_into_the_int8_matmul_and_chain_without_borders(first, second):
    """Tanh, Elu, LeakyRelu and GELU outputs are signed: the kernel requantizes them MIN_FIRST (codes of x - low) for
    the next MatMul; Sigmoid and Relu6 ones unsigned. A LeakyReLU keeps its slope; a GELU (a subgraph of 5 or 8
    ops in the graph) becomes the kernel's GeluExact or GeluApproximate."""
    import keras

    from tests.quantization.test_random_architectures import assert_tracks_exact_8bit

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((20,)), *dense_layers(keras, first, 32), *dense_layers(keras, second, 16),
                              keras.layers.Dense(4)])
    x = np.random.default_rng(0).normal(0.2, 1.0, (96, 20)).astype(np.float32)
    qmodel = kquant.quantize(model, x[:32], progress=False)
    ops = qmodel.op_counts()
    assert ops["_QuantizedMatMul"] == 3 and ops["QuantizeV2"] == 1 and "Dequantize" not in ops
    assert not {"Tanh", "Sigmoid", "Elu", "LeakyRelu", "Relu6", "Erfc", "Pow", "Mul", "BiasAdd"} & set(ops), ops
    matmuls = [n for n in qmodel.graph_def.node if n.op == "_QuantizedMatMul"]
    assert sorted(list(m.attr["fused_ops"].list.s)[1].decode() for m in matmuls if len(m.attr["fused_ops"].list.s) == 3) \
        == sorted(KERNEL_ACTIVATIONS[a] for a in (first, second))
    if first == "leaky":
        assert any(m.attr["leakyrelu_alpha"].f == pytest.approx(0.05) for m in matmuls)
    assert_tracks_exact_8bit(model, x)  # within 2x the error of exact 8-bit arithmetic, repeatable


def test_a_gelu_matmul_kept_out_of_int8_runs_in_bf16_with_its_constants():
    import keras

    from kquant.quantization import pipeline
    from kquant.quantization.collect import calibrate
    from kquant.quantization.config import QuantizationConfig
    from kquant.quantization.encoding import RewriteOptions

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((20,)), *dense_layers(keras, "gelu_tanh", 16), keras.layers.Dense(4)])
    x = np.random.default_rng(0).normal(0.2, 1.0, (64, 20)).astype(np.float32)
    prepared = pipeline.prepare(kquant.freeze(model), QuantizationConfig())
    fp32, units = prepared.fp32, prepared.candidates
    graph, _ = prepared.build(calibrate(fp32, units, x[:32], progress=False), RewriteOptions(pair_safe_weights=True),
                              fell_back=[units[0].anchor], fallback="bf16")
    with kquant.GraphRunner(graph.graph_def, fp32.input_names, fp32.output_names) as run:
        got = run(x[32:])[0]
    assert collections.Counter(n.op for n in graph.graph_def.node)["Tanh"] == 1  # the GELU computed in bf16
    want = model.predict(x[32:], verbose=0)
    assert np.sqrt(np.mean((got - want) ** 2)) <= 0.03 * np.sqrt(np.mean(want ** 2))


def test_public_kernels_keep_a_matmul_with_a_tanh_fp32():
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(4)])
    x = np.random.default_rng(0).random((48, 20), dtype=np.float32)
    ops = kquant.quantize(model, x[:32], kernels="public", progress=False).op_counts()
    # the ReLU Dense in int8; the Tanh one in fp32, and the last one too, as its input is signed
    assert ops["QuantizedMatMulWithBiasAndReluAndRequantize"] == 1 and ops["MatMul"] == 2 and ops["Tanh"] == 1, ops


def fire_module(branch_activation="relu", axis=-1):
    """SqueezeNet's fire module: a 1x1 squeeze, 1x1 and 3x3 expands concatenated, then pooling and a 3x3 conv."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 8), name="x")
    squeeze = keras.layers.Conv2D(6, 1, activation="relu")(inputs)
    left = keras.layers.Conv2D(8, 1, activation="relu")(squeeze)
    right = keras.layers.Conv2D(8, 3, padding="same", activation=branch_activation)(squeeze)
    joined = keras.layers.MaxPooling2D()(keras.layers.Concatenate(axis=axis)([left, right]))
    outputs = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(joined)
    return keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(outputs)))


@pytest.mark.parametrize("axis", [-1, 3, 1])
def test_concat_of_int8_outputs_runs_as_quantized_concat_with_no_fp32_round_trip(axis):
    model = fire_module(axis=axis)
    x = np.random.default_rng(0).normal(0.2, 1.0, (64, 12, 12, 8)).astype(np.float32)
    qmodel = kquant.quantize(model, x[:32], progress=False)
    ops = qmodel.op_counts()
    assert ops["QuantizedConcat"] == 1 and "ConcatV2" not in ops and "Dequantize" not in ops and ops["QuantizeV2"] == 1
    want = model.predict(x[32:], verbose=0)
    assert close_in_steps(qmodel.predict(x[32:]), want)
    int8, simulated = error_against_simulation(model, qmodel, x[:32], x[32:])
    assert int8 <= 2.0 * simulated, (int8, simulated)
    kept = kquant.quantize(model, x[:32], excluded_ops=["ConcatV2"], progress=False)
    assert kept.op_counts()["ConcatV2"] == 1 and kept.op_counts()["Dequantize"] == 2
    # QuantizedConcat requantizes onto the union of its inputs' ranges, as QuantizeV2 did after the fp32 concat
    np.testing.assert_allclose(qmodel.predict(x[32:]), kept.predict(x[32:]), atol=2 * np.abs(want).max() / 255)


def test_concat_with_a_signed_input_stays_fp32_and_its_int8_neighbours_still_quantize():
    model = fire_module(branch_activation=None)  # the 3x3 expand is signed: QuantizedConcat reads codes as unsigned
    x = np.random.default_rng(0).normal(0.2, 1.0, (64, 12, 12, 8)).astype(np.float32)
    qmodel = kquant.quantize(model, x[:32], progress=False)
    ops = qmodel.op_counts()
    assert ops["ConcatV2"] == 1 and "QuantizedConcat" not in ops and ops["_FusedQuantizedConv2D"] == 4
    assert close_in_steps(qmodel.predict(x[32:]), model.predict(x[32:], verbose=0))


def test_a_summand_read_elsewhere_is_read_before_the_fused_conv_overwrites_it():
    """The fused sum accumulates into the summand's buffer: its other readers (here the per-layer report's
    Dequantize of every unit, and a second graph output) must run first; unordered, TensorFlow crashed."""
    import keras

    model = residual_cnn()
    x = np.random.default_rng(0).random((96, 16, 16, 8), dtype=np.float32)
    qmodel = kquant.quantize(model, x[:64], progress=False)
    rows = qmodel.report().rows
    assert len(rows) == len(qmodel.result.units) and all(np.isfinite(r.snr_db) and r.snr_db > 20 for r in rows)
    tap = model.layers[2].output  # the first block's input: the summand of its Add
    both = keras.Model(model.inputs, [model.output, tap])
    two = kquant.quantize(both, x[:64], progress=False)
    assert "AddV2" not in two.op_counts()
    for got, want in zip(two.predict(x[64:]), both.predict(x[64:], verbose=0)):
        assert close_in_steps(got, want)


def test_a_residual_add_whose_summand_is_read_after_it_stays_fp32():
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 8), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    y = keras.layers.Conv2D(8, 3, padding="same")(keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x))
    y = keras.layers.ReLU()(keras.layers.Add()([y, x]))
    joined = keras.layers.Concatenate()([y, x])  # reads the summand x after the Add
    model = keras.Model(inputs, keras.layers.Conv2D(4, 1)(joined))
    data = np.random.default_rng(0).random((64, 12, 12, 8), dtype=np.float32)
    qmodel = kquant.quantize(model, data[:32], progress=False)
    assert qmodel.op_counts()["AddV2"] == 1  # fused, the conv would overwrite x before QuantizedConcat reads it
    assert close_in_steps(qmodel.predict(data[32:]), model.predict(data[32:], verbose=0))


@pytest.mark.parametrize("relu_after", [True, False])
def test_a_residual_add_of_a_conv_and_its_own_input_stays_fp32_and_runs(relu_after):
    """x + conv(x): the fused conv would write into the buffer it reads; TensorFlow crashed on it."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 8), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    added = keras.layers.Add()([keras.layers.Conv2D(8, 3, padding="same")(x), x])
    added = keras.layers.ReLU()(added) if relu_after else added
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(added)))
    data = np.random.default_rng(0).random((64, 12, 12, 8), dtype=np.float32)
    qmodel = kquant.quantize(model, data[:32], progress=False)
    assert qmodel.op_counts()["AddV2"] == 1
    assert close_in_steps(qmodel.predict(data[32:]), model.predict(data[32:], verbose=0))


def test_concat_of_an_int8_output_and_an_unsigned_fp32_tensor_quantizes_the_fp32_one_at_the_border():
    """DenseNet's joins: the fp32 stem's output concatenated with int8 conv outputs, three times."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)  # the image stem: fp32
    for _ in range(3):
        x = keras.layers.Concatenate()([x, keras.layers.Conv2D(4, 3, padding="same", activation="relu")(x)])
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x)))
    data = np.random.default_rng(0).random((64, 12, 12, 3), dtype=np.float32)
    qmodel = kquant.quantize(model, data[:32], progress=False)
    ops = qmodel.op_counts()
    assert ops["QuantizedConcat"] == 3 and "ConcatV2" not in ops and "Dequantize" in ops
    assert ops["QuantizeV2"] == 2  # the stem's output, for a conv and a concat alike; the Dense's input after the Mean
    assert close_in_steps(qmodel.predict(data[32:]), model.predict(data[32:], verbose=0))
    int8, simulated = error_against_simulation(model, qmodel, data[:32], data[32:])
    assert int8 <= 2.0 * simulated, (int8, simulated)

    signed = keras.Model(inputs, keras.layers.Concatenate()([inputs - 0.5, keras.layers.Conv2D(4, 3, padding="same",
                                                                                                activation="relu")(x)]))
    ops = kquant.quantize(signed, data[:32], progress=False).op_counts()
    assert ops["ConcatV2"] == 1 and ops["QuantizedConcat"] == 3  # the join with the signed image - 0.5 stays fp32
