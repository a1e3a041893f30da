"""Quantizing for a target runtime (``target="openvino"``): predict and accuracy-aware tuning run the OpenVINO form
of each candidate; ``kquant bench`` times OpenVINO IRs beside TF graphs."""

import sys

import numpy as np
import pytest

import kquant
from kquant.cli import main
from kquant.errors import ConfigurationError, MissingRuntimeError
from kquant.quantization import openvino as kov
from kquant.quantization.config import QuantizationConfig

from ..conftest import save_conv_model_files
from .test_export import first, needs_openvino, run_openvino


@needs_openvino
def test_an_openvino_target_predicts_what_its_exported_ir_computes(fashion, tmp_path):
    model, x, xt, yt = fashion
    qmodel = kquant.quantize(model, x[:1000], target="openvino", progress=False)
    x, y = xt[:2000], yt[:2000]
    predicted = first(qmodel.predict(x))
    converted = qmodel.openvino_model()
    xml = qmodel.export(tmp_path / "fashion.xml", format="openvino")
    assert qmodel.openvino_model() is converted  # the export wrote what predict runs
    np.testing.assert_allclose(run_openvino(xml, x), predicted, atol=1e-6)
    np.testing.assert_allclose(first(qmodel.predict(x)), predicted, atol=0)  # writing the IR changed nothing
    assert any(n.op.startswith("_FusedQuantized") for n in qmodel.graph_def.node)  # graph_def stays TF's int8 graph
    fp32 = np.asarray(model.predict(x, verbose=0)).argmax(1)
    assert np.mean(predicted.argmax(1) == y) >= np.mean(fp32 == y) - 0.005


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny conv model, its saved file and 32 random images (the mechanics, not accuracy)."""
    root = tmp_path_factory.mktemp("target")
    model, x = save_conv_model_files(root, 32)
    return model, x, root


@needs_openvino
def test_tuning_for_openvino_scores_each_candidate_as_openvino_runs_it(tiny, tmp_path, monkeypatch):
    model, x, _ = tiny
    reference = np.asarray(model.predict(x, verbose=0))
    runs, lowered = [], []
    real_call, real_lower = kov.OpenVinoRunner.__call__, kov.lower
    monkeypatch.setattr(kov.OpenVinoRunner, "__call__", lambda self, *a: runs.append(1) or real_call(self, *a))
    monkeypatch.setattr(kov, "lower", lambda fp32, units, *a: lowered.append(units) or real_lower(fp32, units, *a))
    on_openvino = []

    def closeness(predict):  # higher is better: 0 for the fp32 model, below for any int8 one
        before = len(runs)
        score = -float(np.mean(np.abs(predict(x) - reference)))
        on_openvino.append(len(runs) > before)
        return score

    with pytest.warns(UserWarning, match="no trial met"):  # data read once: one calibration, then fallbacks
        qmodel = kquant.quantize(model, iter([x]), eval_fn=closeness, max_accuracy_drop=0.0, relative=False,
                                 max_trials=2, stem="int8", target="openvino", progress=False)
    trials = qmodel.trials
    assert len(trials) == 2 and not trials[0].fell_back and len(trials[1].fell_back) == 1
    assert on_openvino == [False] + [True] * len(trials)  # the fp32 baseline in TF, every candidate in OpenVINO
    weighted = {u.anchor for u in qmodel.result.prepared.candidates if u.weighted}
    assert len(weighted) == 2
    assert len(lowered) == len(trials)
    for units, trial in zip(lowered, trials):  # each candidate lowered without the units it keeps out of int8
        assert {u.anchor for u in units if u.weighted} == weighted - set(trial.fell_back)
    chosen = next(t for t in trials if (t.calibration, t.fell_back) == (qmodel.result.calibration, qmodel.result.fell_back))
    xml = qmodel.export(tmp_path / "m.xml", format="openvino")
    assert len(lowered) == len(trials)  # the export reuses the chosen candidate's conversion
    assert closeness(lambda batch: run_openvino(xml, batch)) == pytest.approx(chosen.score, abs=1e-7)


def test_an_unknown_target_is_a_configuration_error(tiny):
    model, x, _ = tiny
    with pytest.raises(ConfigurationError, match=r"target='onnx' is not valid; expected one of 'tensorflow', 'openvino'"):
        kquant.quantize(model, x, target="onnx", progress=False)
    with pytest.raises(ConfigurationError, match="target=1 is not valid"):
        QuantizationConfig(target=1)


def test_a_missing_openvino_fails_before_the_model_is_read(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(MissingRuntimeError, match=r'pip install "kquant\[openvino\]"'):
        kquant.quantize(tmp_path / "absent.keras", np.zeros((1, 28, 28, 1), np.float32), target="openvino")


@pytest.fixture(scope="module")
def ir(tiny):
    """The tiny model quantized for OpenVINO through the CLI: m.xml + m.bin."""
    _, _, root = tiny
    assert main(["quantize", str(root / "m.keras"), "--calib", str(root / "calib.npy"), "-o", str(root / "m.xml"),
                 "--target", "openvino", "--no-progress"]) == 0
    return root / "m.xml"


@needs_openvino
def test_benchmark_times_an_openvino_ir_beside_the_tf_graph(tiny, ir):
    model, x, _ = tiny
    labels = run_openvino(ir, x).argmax(1)
    report = kquant.benchmark(model, ir, batches=(1, 4), runs=3, data=x, labels=labels, progress=False)
    int8 = report.variants["int8"]
    assert int8.name == "int8 (OpenVINO)" and sorted(int8.timings) == [1, 4]
    assert int8.accuracy == 100.0  # the labels are the IR's own classes: the IR is what ran
    assert int8.size_bytes == ir.stat().st_size + ir.with_suffix(".bin").stat().st_size
    assert set(report.ratios()) == {"size", "speedup_b1", "speedup_b4"}


@needs_openvino
def test_kquant_bench_takes_xml_models(tiny, ir, capfd):
    _, _, root = tiny
    assert main(["bench", str(root / "m.keras"), "--int8", str(ir), "--data", str(root / "calib.npy"), "--runs", "3",
                 "--no-progress"]) == 0
    out = capfd.readouterr().out
    assert "\nfp32 (" in out and "int8 (OpenVINO)" in out and "Top-1 agreement (%)" in out and "int8 / fp32: size" in out
    assert main(["bench", str(ir), "--batch", "1", "--runs", "3", "--no-progress"]) == 0
    assert "fp32 (OpenVINO)" in capfd.readouterr().out


@needs_openvino
def test_an_ir_without_its_bin_is_one_error_line(tiny, ir, tmp_path, capfd):
    lone = tmp_path / "lone.xml"
    lone.write_bytes(ir.read_bytes())
    assert main(["bench", str(tiny[2] / "m.keras"), "--int8", str(lone), "--runs", "3", "--no-progress"]) == 2
    err = capfd.readouterr().err
    assert err.startswith("kquant: error:") and f"{tmp_path / 'lone.bin'} does not exist" in err and err.count("\n") == 1
    with pytest.raises(kquant.KQuantError, match="keep the .bin next to the .xml"):
        kquant.benchmark(lone)


@needs_openvino
def test_an_openvino_runner_compiles_with_the_threads_and_precision_asked_for(ir):
    model = kov.read_ir(ir)
    inputs, _ = kov.model_specs(model)
    default = kov.OpenVinoRunner(model, inputs).compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    asked = "f32" if default == "bf16" else "bf16"  # not the CPU's default, so the hint is what sets it
    compiled = kov.OpenVinoRunner(model, inputs, threads=1, precision=asked).compiled
    assert compiled.get_property("INFERENCE_NUM_THREADS") == 1
    assert compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == asked
