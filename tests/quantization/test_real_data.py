"""int8 accuracy on real data: Fashion-MNIST CNN, Adult Wide & Deep, the pretrained fer model on real faces."""

import collections

import numpy as np

import kquant
from kquant import datasets


def accuracy(scores, labels):
    return 100.0 * np.mean(scores.argmax(1) == labels)


def test_fashion_cnn_int8_within_half_a_point_of_fp32_on_10k_test_images(fashion, fashion_int8):
    model, _, xt, yt = fashion
    fp32 = accuracy(model.predict(xt, verbose=0), yt)
    int8 = accuracy(fashion_int8.predict(xt), yt)
    assert fp32 > 80.0
    assert abs(fp32 - int8) <= 0.5, (fp32, int8)


def test_fashion_cnn_graph_holds_fused_int8_ops_and_no_requantize_round_trips(fashion_int8):
    ops = collections.Counter(n.op for n in fashion_int8.graph_def.node)
    assert ops["_FusedQuantizedConv2D"] == 2 and ops["Conv2D"] == 1  # the stem, reading the image, stays fp32
    assert ops["_QuantizedMatMul"] == 2 and ops["MatMul"] == 0
    by_name = {n.name: n for n in fashion_int8.graph_def.node}
    for node in fashion_int8.graph_def.node:
        if node.op == "QuantizeV2":
            assert by_name[node.input[0].split(":")[0]].op != "Dequantize", node.name


def test_int8_file_is_at_most_035_of_fp32(fashion, fashion_int8, tmp_path):
    model = fashion[0]
    fp32_size = kquant.freeze(model).save(tmp_path / "fp32.pb").stat().st_size
    int8_size = fashion_int8.save(tmp_path / "int8.pb").stat().st_size
    assert int8_size <= 0.35 * fp32_size, (int8_size, fp32_size)


def test_wide_deep_int8_within_half_a_point_of_fp32(wide_deep, wide_deep_int8):
    model, _, xt, yt = wide_deep
    qmodel = wide_deep_int8
    fp32 = 100 * np.mean((model.predict(xt, verbose=0)[:, 0] > 0.5) == yt)
    int8 = 100 * np.mean((qmodel.predict(xt)[:, 0] > 0.5) == yt)
    assert fp32 > 83.0
    assert abs(fp32 - int8) <= 0.5, (fp32, int8)
    assert collections.Counter(n.op for n in qmodel.graph_def.node)["_QuantizedMatMul"] >= 4


def test_fer_model_top1_agreement_at_least_97_percent_on_faces_not_used_for_calibration(faces, fer_int8):
    import keras

    reference = keras.models.load_model(datasets.fer_model_path(), compile=False)
    held_out = faces[100:]
    agreement = np.mean(reference.predict(held_out, verbose=0).argmax(1) == fer_int8.predict(held_out).argmax(1))
    assert agreement >= 0.97, agreement


def test_fer_image_stem_kept_fp32_lowers_the_output_error_on_unseen_faces(faces, fer_int8):
    """The default keeps fer's stem conv fp32: its 1-channel input's rounding is the largest single error."""
    import keras

    reference = keras.models.load_model(datasets.fer_model_path(), compile=False).predict(faces[100:], verbose=0)
    every = kquant.quantize(datasets.fer_model_path(), faces[:100], stem="int8", progress=False)

    def snr(got):
        return 10 * np.log10(np.mean(reference ** 2) / np.mean((got - reference) ** 2))

    assert len(fer_int8.result.stems) == 1 and every.result.stems == ()
    assert snr(fer_int8.predict(faces[100:])) >= snr(every.predict(faces[100:])) + 1.5  # measured 23.9 vs 20.9 dB


def test_fer_int8_graph_holds_quantized_convs_and_its_file_is_at_most_035_of_the_frozen_fp32_one(fer_int8, tmp_path):
    ops = collections.Counter(n.op for n in fer_int8.graph_def.node)
    assert ops["_FusedQuantizedConv2D"] + ops["_FusedQuantizedDepthwiseConv2D"] >= 10
    fp32_size = kquant.freeze(datasets.fer_model_path()).save(tmp_path / "fp32.pb").stat().st_size
    int8_size = fer_int8.save(tmp_path / "int8.pb").stat().st_size
    assert int8_size <= 0.35 * fp32_size, (int8_size, fp32_size)


def quantized_on_fashion_rows(fashion, build):
    """``build(keras)``'s model trained 2 epochs on 20k Fashion-MNIST images read as 28 rows of 28 pixels and
    quantized on 1000 of them; its int8 accuracy asserted within half a point of fp32."""
    import keras

    _, x, xt, yt = fashion
    x, xt = x.reshape(-1, 28, 28), xt.reshape(-1, 28, 28)
    y = datasets.fashion_mnist("train")[1]
    keras.utils.set_random_seed(0)
    model = build(keras)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:20000], y[:20000], epochs=2, batch_size=128, verbose=0)
    qmodel = kquant.quantize(model, x[:1000], progress=False)
    fp32, int8 = accuracy(model.predict(xt, verbose=0), yt), accuracy(qmodel.predict(xt), yt)
    assert fp32 > 80.0
    assert abs(fp32 - int8) <= 0.5, (fp32, int8)
    return qmodel


def test_conv1d_net_on_fashion_rows_int8_within_half_a_point_and_one_int8_chain(fashion):
    """Conv1D + ReLU, MaxPooling1D, Conv1D + BatchNormalization + ReLU, Dense."""

    def build(keras):
        layers = keras.layers
        return keras.Sequential([keras.Input((28, 28)), layers.Conv1D(32, 3, padding="same", activation="relu"),
                                 layers.MaxPooling1D(2), layers.Conv1D(32, 3, use_bias=False), layers.BatchNormalization(),
                                 layers.ReLU(), layers.Flatten(), layers.Dense(10)])

    ops = quantized_on_fashion_rows(fashion, build).op_counts()
    # one QuantizeV2 for the sequence; convs, pooling and flatten in int8, the batch norm folded into the conv
    assert ops["_FusedQuantizedConv2D"] == 2 and ops["QuantizeV2"] == 1 and ops["QuantizedMaxPool"] == 1
    assert not {"Dequantize", "BiasAdd", "Relu", "Mul", "Squeeze"} & set(ops), ops


def test_transformer_encoder_on_fashion_rows_int8_within_half_a_point_with_every_projection_in_int8(fashion):
    """Rows as tokens: Dense embedding, MultiHeadAttention and a Dense + GELU feed-forward, each with a residual Add
    and LayerNormalization, Flatten, Dense."""

    def build(keras):
        layers = keras.layers
        inputs = keras.Input((28, 28))
        h = layers.Dense(32)(inputs)
        h = layers.LayerNormalization()(layers.Add()([h, layers.MultiHeadAttention(num_heads=2, key_dim=16)(h, h)]))
        h = layers.LayerNormalization()(layers.Add()([h, layers.Dense(32)(layers.Dense(64, activation="gelu")(h))]))
        return keras.Model(inputs, layers.Dense(10)(layers.Flatten()(h)))

    ops = quantized_on_fashion_rows(fashion, build).op_counts()
    # embedding, query, key, value, output, two feed-forward and the head; attention's two Einsums stay fp32
    assert ops["_QuantizedMatMul"] == 8 and ops["Einsum"] == 2
    assert not {"MatMul", "BatchMatMulV2", "QuantizedReshape"} & set(ops), ops
