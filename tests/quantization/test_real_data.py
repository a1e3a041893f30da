"""int8 accuracy on real data: Fashion-MNIST CNN, Adult Wide & Deep, the pretrained fer model on real faces."""

import collections

import numpy as np
import pytest

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
    assert ops["_FusedQuantizedConv2D"] == 3
    assert ops["_QuantizedMatMul"] == 2
    assert ops["Conv2D"] == 0 and ops["MatMul"] == 0
    by_name = {n.name: n for n in fashion_int8.graph_def.node}
    for node in fashion_int8.graph_def.node:
        if node.op == "QuantizeV2":
            assert by_name[node.input[0].split(":")[0]].op != "Dequantize", node.name


def test_int8_file_is_at_most_035_of_fp32(fashion, fashion_int8, tmp_path):
    model = fashion[0]
    fp32_size = kquant.freeze(model).save(tmp_path / "fp32.pb").stat().st_size
    int8_size = fashion_int8.save(tmp_path / "int8.pb").stat().st_size
    assert int8_size <= 0.35 * fp32_size, (int8_size, fp32_size)


def test_wide_deep_int8_within_half_a_point_of_fp32(wide_deep):
    model, x, xt, yt = wide_deep
    qmodel = kquant.quantize(model, {k: v[:2000] for k, v in x.items()}, progress=False)
    fp32 = 100 * np.mean((model.predict(xt, verbose=0)[:, 0] > 0.5) == yt)
    int8 = 100 * np.mean((qmodel.predict(xt)[:, 0] > 0.5) == yt)
    assert fp32 > 83.0
    assert abs(fp32 - int8) <= 0.5, (fp32, int8)
    assert collections.Counter(n.op for n in qmodel.graph_def.node)["_QuantizedMatMul"] >= 4


@pytest.mark.xfail(strict=True, reason="known gap: 96 % measured here, as TFLite; an exact 8-bit simulation gives 95 % (issue 4 stays open)")
def test_fer_model_top1_agreement_at_least_97_percent_on_faces_not_used_for_calibration(faces, fer_int8):
    import keras

    reference = keras.models.load_model(datasets.fer_model_path(), compile=False)
    held_out = faces[100:]
    agreement = np.mean(reference.predict(held_out, verbose=0).argmax(1) == fer_int8.predict(held_out).argmax(1))
    assert agreement >= 0.97, agreement


def test_fer_int8_graph_holds_quantized_convs_and_its_file_is_at_most_035_of_the_frozen_fp32_one(fer_int8, tmp_path):
    ops = collections.Counter(n.op for n in fer_int8.graph_def.node)
    assert ops["_FusedQuantizedConv2D"] + ops["_FusedQuantizedDepthwiseConv2D"] >= 10
    fp32_size = kquant.freeze(datasets.fer_model_path()).save(tmp_path / "fp32.pb").stat().st_size
    int8_size = fer_int8.save(tmp_path / "int8.pb").stat().st_size
    assert int8_size <= 0.35 * fp32_size, (int8_size, fp32_size)
