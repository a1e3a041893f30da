"""Exporting a QuantizedModel for other runtimes: the portable QDQ graph and the OpenVINO IR, on real data
(fer on 100 held-out faces, the Fashion-MNIST CNN), and ``kquant quantize -o model.xml / --format``."""

import importlib.util
import re
import sys
import warnings

import numpy as np
import pytest
import tensorflow as tf

import kquant
from kquant.errors import MissingRuntimeError
from kquant.graph import atomic_write
from kquant.graphdef import node_name, nodes_by_name
from kquant.quantization import model as model_module
from kquant.quantization import qdq
from kquant.quantization.cpu import has_vnni
from kquant.quantization.openvino import INT8_PRECISIONS, convert, import_openvino
from kquant.quantization.qdq import QdqPoints, export_points, qdq_graph_def
from kquant.runtime import GraphRunner

from ..conftest import cli_quantize

needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                    reason='openvino is not installed (pip install "kquant[openvino]")')


def run_graph(graph_def, frozen, x):
    with GraphRunner(graph_def, frozen.input_names, frozen.output_names) as run:
        out = run(x)
    return out[0] if isinstance(out, list) else out


def first(out):
    return out[0] if isinstance(out, list) else out


def run_openvino(path, x):
    ov = import_openvino()
    compiled = ov.Core().compile_model(str(path), "CPU")
    return compiled(x)[0]


def test_the_qdq_export_graph_computes_the_simulation_it_is_derived_from(fer_int8, faces):
    """Same FakeQuant points; its weight FakeQuants give the simulation's rounded weights (to float error)."""
    result = fer_int8.result
    points = QdqPoints(result.fp32, result.units, result.ranges, weights="fake_quant")
    export, simulation = points.graph_def(), qdq_graph_def(result.fp32, result.units, result.ranges)
    activation_points = {n.name for n in simulation.node if n.op == "FakeQuantWithMinMaxArgs"}
    assert activation_points == {n.name for n in export.node if n.op == "FakeQuantWithMinMaxArgs"}
    weighted = [u for u in result.units if u.weighted]
    assert sorted(w.anchor for w in points.weights) == sorted(u.anchor for u in weighted)
    assert {u.family for u in weighted} >= {"convolution", "depthwise"}
    fakes = [f"{w.anchor}/weights_fake_quant" + ("/to_filter" if w.values.shape[-1] != w.channels else "")
             for w in points.weights]
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(export, name="")
    with tf.compat.v1.Session(graph=graph) as session:
        values = session.run([f"{name}:0" for name in fakes])
    for weights, value in zip(points.weights, values):
        step = weights.w_max / 127.0
        assert value.shape == weights.values.shape
        assert np.all(np.abs(value - weights.exact()).reshape(-1, weights.channels) <= 1e-5 * step), weights.anchor
    x = faces[100:200]
    np.testing.assert_allclose(run_graph(export, result.fp32, x), run_graph(simulation, result.fp32, x), atol=1e-5)


def test_a_qdq_export_writes_a_graph_def_or_a_saved_model(fashion_int8, fashion, tmp_path):
    _, _, xt, _ = fashion
    graph = fashion_int8.export(tmp_path / "qdq.pb", format="qdq")
    graph_def = kquant.load_graph_def(graph)
    assert any(n.op == "FakeQuantWithMinMaxVarsPerChannel" for n in graph_def.node)
    saved = fashion_int8.export(tmp_path / "qdq_saved", format="qdq")
    serve = tf.saved_model.load(str(saved)).signatures["serving_default"]
    (out,) = serve(tf.constant(xt[:64])).values()
    np.testing.assert_allclose(out.numpy(), run_graph(graph_def, fashion_int8.result.fp32, xt[:64]), atol=1e-5)


def test_an_unknown_format_is_a_clear_error(fashion_int8, tmp_path):
    with pytest.raises(kquant.KQuantError, match="saved_model, qdq, openvino"):
        fashion_int8.export(tmp_path / "m.onnx", format="onnx")


def test_a_missing_openvino_says_how_to_install_it(fashion_int8, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino raises ImportError
    with pytest.raises(MissingRuntimeError, match=r'pip install "kquant\[openvino\]"'):
        fashion_int8.export(tmp_path / "m.xml", format="openvino")
    assert list(tmp_path.iterdir()) == []


@needs_openvino
def test_fer_in_openvino_runs_int8_and_agrees_with_fp32_and_kquants_int8(fer_int8, faces, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        xml = fer_int8.export(tmp_path / "fer.xml", format="openvino")
    assert not [w for w in caught if "OpenVINO runs" in str(w.message)]  # no unit left out of int8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fer.bin", "fer.xml"]
    weighted = {u.anchor for u in fer_int8.result.units if u.weighted}
    assert set(fer_int8.openvino_precisions) == weighted and len(weighted) >= 20
    assert set(fer_int8.openvino_precisions.values()) <= set(INT8_PRECISIONS)
    x = faces[100:200]
    openvino = run_openvino(xml, x).argmax(1)
    fp32 = run_graph(fer_int8.result.fp32.graph_def, fer_int8.result.fp32, x).argmax(1)
    assert np.mean(openvino == fp32) >= 0.97  # 98 of 100 with VNNI (TF's int8 graph: 99)
    # with VNNI both run the same weights: 99 of 100. Without it OpenVINO's u8 x s8 kernels need the pair-safe
    # weights everywhere and TF's int8 graph only where a conv reads unsigned codes: 97 of 100 (AMD EPYC, AVX2)
    agreement = np.mean(openvino == first(fer_int8.predict(x)).argmax(1))
    assert agreement >= (0.99 if has_vnni() else 0.95), agreement


@needs_openvino
def test_the_fashion_cnn_in_openvino_keeps_its_accuracy(fashion, fashion_int8, tmp_path):
    model, _, xt, yt = fashion
    xml = fashion_int8.export(tmp_path / "fashion.xml", format="openvino")
    assert fashion_int8.openvino_precisions and set(fashion_int8.openvino_precisions.values()) <= set(INT8_PRECISIONS)
    assert {u.family for u in fashion_int8.result.units if u.weighted} >= {"convolution", "matmul"}
    x, y = xt[:2000], yt[:2000]
    openvino = run_openvino(xml, x).argmax(1)
    fp32 = np.asarray(model.predict(x, verbose=0)).argmax(1)
    assert np.mean(openvino == y) >= np.mean(fp32 == y) - 0.005
    assert np.mean(openvino == first(fashion_int8.predict(x)).argmax(1)) >= 0.99


@needs_openvino
def test_wide_and_deep_in_openvino_keeps_its_accuracy(wide_deep, wide_deep_int8, tmp_path):
    """Two inputs (numeric columns, int32 category indices) and MatMul units: the Adult census test set."""
    from kquant.quantization.openvino import OpenVinoRunner

    model, _, xt, yt = wide_deep
    xml = wide_deep_int8.export(tmp_path / "wide_deep.xml", format="openvino")
    weighted = {u.anchor for u in wide_deep_int8.result.units if u.weighted}
    assert {u.family for u in wide_deep_int8.result.units if u.weighted} == {"matmul"}
    assert set(wide_deep_int8.openvino_precisions) == weighted and len(weighted) >= 4
    assert set(wide_deep_int8.openvino_precisions.values()) <= set(INT8_PRECISIONS)
    inputs = wide_deep_int8.result.fp32.inputs
    run = OpenVinoRunner(str(xml), inputs)
    openvino = run(*[xt[spec.node] for spec in inputs])[0][:, 0] > 0.5
    fp32 = model.predict(xt, verbose=0)[:, 0] > 0.5
    assert 100 * np.mean(openvino == yt) >= 100 * np.mean(fp32 == yt) - 0.5
    assert np.mean(openvino == (first(wide_deep_int8.predict(xt))[:, 0] > 0.5)) >= 0.99


@needs_openvino
def test_the_openvino_model_is_the_one_ov_convert_model_gives(fashion_int8, fashion):
    """kquant reads the QDQ graph with OpenVINO's TensorFlow frontend and the passes of ``ov.convert_model``:
    the same layers, int8 weights, the same outputs."""
    ov = import_openvino()
    _, _, xt, _ = fashion
    result = fashion_int8.result
    points = export_points(result.fp32, result.units, result.ranges, result.options)
    graph_def = points.graph_def()
    ours = convert(graph_def, result.fp32, points.weights)
    theirs = ov.convert_model(graph_def, output=list(result.fp32.output_names))
    assert sorted(op.get_type_name() for op in ours.get_ops()) == sorted(op.get_type_name() for op in theirs.get_ops())
    assert sum(op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8 for op in ours.get_ops()) == len(points.weights) == 4
    core = ov.Core()
    np.testing.assert_array_equal(core.compile_model(ours, "CPU")(xt[:256])[0], core.compile_model(theirs, "CPU")(xt[:256])[0])


@needs_openvino
def test_wide_and_deeps_concats_are_rounded_at_their_inputs(wide_deep, wide_deep_int8, monkeypatch):
    """Embeddings and numeric columns meet in two fp32 concats, each read by an int8 matmul, that round the numeric
    columns alike: the export rounds the concats' inputs (the same values, bit for bit), so OpenVINO rounds the
    shared numeric input once (3 FakeQuantize layers in the compiled model, 4 when the concats' outputs are rounded)."""
    _, _, xt, _ = wide_deep
    result = wide_deep_int8.result
    points = export_points(result.fp32, result.units, result.ranges, result.options)
    export = points.graph_def()
    nodes = nodes_by_name(export)
    concats = [n for n in export.node if n.op == "ConcatV2"]
    assert len(concats) == 2
    assert all(nodes[node_name(i)].op == "FakeQuantWithMinMaxArgs" for c in concats for i in c.input[:-1])

    def fake_quantize_layers(graph_def):
        compiled = import_openvino().Core().compile_model(convert(graph_def, result.fp32, points.weights), "CPU")
        return sum(op.get_rt_info()["layerType"].astype(str) == "FakeQuantize" for op in compiled.get_runtime_model().get_ops())

    assert fake_quantize_layers(export) == 3
    monkeypatch.setattr(qdq, "_concat_input_slots", lambda *args: [])
    rounded_after = points.graph_def()
    assert all(f"{c.name}/fake_quant" in nodes_by_name(rounded_after) for c in concats)
    assert fake_quantize_layers(rounded_after) == 4
    columns = [xt[spec.node][:2000] for spec in result.fp32.inputs]
    with GraphRunner(export, result.fp32.input_names, result.fp32.output_names) as run_export, \
            GraphRunner(rounded_after, result.fp32.input_names, result.fp32.output_names) as run_rounded_after:
        np.testing.assert_array_equal(run_export(*columns)[0], run_rounded_after(*columns)[0])


@needs_openvino
def test_a_unit_openvino_runs_in_fp32_is_named_in_one_warning(fashion_int8, tmp_path, monkeypatch):
    from kquant.quantization import openvino as kov

    real = kov.runtime_precisions
    monkeypatch.setattr(kov, "runtime_precisions",
                        lambda *a, **k: {**real(*a, **k), fashion_int8.result.units[0].anchor: "f32"})
    with pytest.warns(UserWarning) as caught:
        fashion_int8.export(tmp_path / "m.xml", format="openvino")
    layer = fashion_int8.result.layers.get(fashion_int8.result.units[0].anchor, fashion_int8.result.units[0].anchor)
    assert len(caught) == 1 and f"{layer} (f32)" in str(caught[0].message)


@needs_openvino
def test_a_failing_openvino_export_leaves_nothing_and_keeps_earlier_files(fashion_int8, tmp_path, monkeypatch):
    (tmp_path / "m.xml").write_text("earlier xml")
    (tmp_path / "m.bin").write_bytes(b"earlier bin")
    real_copy = model_module._copy

    def copy(source, target):
        if target.suffix == ".xml":
            with atomic_write(target):
                raise OSError(28, "No space left on device")
        real_copy(source, target)

    monkeypatch.setattr(model_module, "_copy", copy)
    with pytest.raises(kquant.KQuantError):
        fashion_int8.export(tmp_path / "m.xml", format="openvino")
    assert (tmp_path / "m.xml").read_text() == "earlier xml" and (tmp_path / "m.bin").read_bytes() == b"earlier bin"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml"]
    monkeypatch.setattr(model_module, "_copy", copy)
    with pytest.raises(kquant.KQuantError):
        fashion_int8.export(tmp_path / "new" / "n.xml", format="openvino")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("out, more, message", [
    ("m.onnx", (), "name the output .pb/.pbtxt (the int8 graph) or .xml (OpenVINO IR)"),
    ("m.pb", ("--format", "openvino"), "does not fit --format openvino"),
    ("m.xml", ("--format", "pb"), "does not fit --format pb"),
    ("m.xml", ("--format", "qdq"), "does not fit --format qdq"),
    ("m.pb", ("--format", "saved_model"), "does not fit --format saved_model"),
])
def test_a_suffix_the_format_cannot_take_is_one_error_line(cli_files, tmp_path, capfd, out, more, message):
    assert cli_quantize(cli_files, tmp_path / out, *more) == 2
    err = capfd.readouterr().err
    assert err.startswith("kquant: error:") and message in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_format_chooses_a_saved_model_or_the_qdq_graph(cli_files, tmp_path):
    assert cli_quantize(cli_files, tmp_path / "int8", "--format", "saved_model") == 0
    assert cli_quantize(cli_files, tmp_path / "qdq.pbtxt", "--format", "qdq") == 0
    assert (tmp_path / "int8" / "saved_model.pb").exists()
    assert any(n.op.startswith("FakeQuant") for n in kquant.load_graph_def(tmp_path / "qdq.pbtxt").node)


@needs_openvino
def test_an_xml_output_is_an_openvino_ir(cli_files, tmp_path, capfd):
    assert cli_quantize(cli_files, tmp_path / "m.xml", "--report", str(tmp_path / "r.html")) == 0
    assert re.search(r"OpenVINO runs (\d+) of the \1 int8 convolutions/matmuls in int8", capfd.readouterr().out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml", "r.html"]
    x = np.random.default_rng(1).random((4, 28, 28, 1), np.float32)
    assert run_openvino(tmp_path / "m.xml", x).shape[0] == 4


def test_a_missing_openvino_fails_before_any_work(cli_files, tmp_path, capfd, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    assert cli_quantize(cli_files, tmp_path / "m.xml") == 2
    assert 'pip install "kquant[openvino]"' in capfd.readouterr().err and list(tmp_path.iterdir()) == []
