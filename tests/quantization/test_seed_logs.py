"""Seed min/max logs: kquant's own and Intel's naming, __min/__max-only logs, matched-entry checks, --report with a
log, and the stages GraphConverter(debug=True) / --save-stages write, read back as a log."""

import numpy as np
import pytest

import kquant
from kquant.cli import main
from kquant.errors import CalibrationDataError
from kquant.quantization.graph_converter import STAGE_FILES
from kquant.quantization.seed_logs import ranges_from_log
from kquant.quantization.pipeline import plan

from ..conftest import save_conv_model_files


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("logs")
    model, calib = save_conv_model_files(root, 16)
    return root, model, calib


@pytest.fixture(scope="module")
def debugged(model_files):
    root, model, calib = model_files
    converter = kquant.GraphConverter(str(root / "m.keras"), str(root / "q.pb"), None, None, debug=True)
    return converter.convert(calib, progress=False), root / "q_stages"


def test_debug_writes_the_stages(debugged):
    qmodel, stages = debugged
    assert sorted(p.name for p in stages.iterdir()) == sorted(STAGE_FILES)
    fp32 = kquant.load_graph_def(stages / "fp32_optimized.pb")
    unmerged = kquant.load_graph_def(stages / "int8_before_merge.pb")
    assert not any(n.op.startswith("_Quantized") or "Quantize" in n.op for n in fp32.node)
    assert len(unmerged.node) >= len(qmodel.graph_def.node)  # merge_duplicate_nodes only removes nodes
    assert any("Quantized" in n.op for n in unmerged.node)
    assert "__requant_min_max:[" in (stages / "min_max_log.txt").read_text()


def test_the_stage_log_round_trips_without_data(debugged, model_files):
    qmodel, stages = debugged
    root = model_files[0]
    again = kquant.GraphConverter(str(root / "m.keras"), str(root / "again.pb"), None, None).convert(
        min_max_log=str(stages / "min_max_log.txt"), progress=False)
    assert again.result.ranges.keys() == qmodel.result.ranges.keys()
    for tensor, bounds in qmodel.result.ranges.items():
        assert again.result.ranges[tensor] == pytest.approx(bounds)
    x = model_files[2][:4]
    np.testing.assert_array_equal(again.predict(x)[0], qmodel.predict(x)[0])


def units_of(qmodel):
    return plan(qmodel.result.fp32)


def test_kquant_and_intel_requant_names_match(debugged):
    qmodel = debugged[0]
    conv = next(u for u in units_of(qmodel) if u.family == "matmul")
    low, high = qmodel.result.ranges[conv.output_tensor]
    for name in (f"{conv.anchor}/eightbit/requant_range", f"{conv.anchor}_eightbit_requant_range"):
        log = f";{name}__print__;__requant_min_max:[{low}][{high}]\n"
        assert ranges_from_log(log, units_of(qmodel)) == {conv.output_tensor: (low, high)}


def test_min_max_only_log(debugged):
    qmodel = debugged[0]
    tensor = "image:0"
    log = ";kquant_eightbit_min_image__print__;__min:[-0.5]\n;x/MaxPool_eightbit_max_image__print__;__max:[2.5]\n"
    assert ranges_from_log(log, units_of(qmodel)) == {tensor: (-0.5, 2.5)}


def test_a_log_that_matches_nothing_is_refused_and_unmatched_entries_warned(debugged):
    units = units_of(debugged[0])
    with pytest.raises(CalibrationDataError, match="none of the 1 min/max log entries"):
        ranges_from_log(";v0/conv9/Conv2D_eightbit_requant_range__print__;__requant_min_max:[0][1]\n", units)
    conv = next(u for u in units if u.family == "matmul")
    log = (f";{conv.anchor}_eightbit_requant_range__print__;__requant_min_max:[0][1]\n"
           ";v0/conv9/Conv2D_eightbit_requant_range__print__;__requant_min_max:[0][1]\n")
    with pytest.warns(UserWarning, match="1 of 2 min/max log entries match no int8 unit.*v0/conv9"):
        assert len(ranges_from_log(log, units)) == 1


def test_cli_log_alone_and_report_with_log_and_save_stages(debugged, model_files, capfd):
    root = model_files[0]
    log = str(debugged[1] / "min_max_log.txt")
    assert main(["quantize", str(root / "m.keras"), "--min-max-log", log, "-o", str(root / "cli.pb"), "--no-progress",
                 "--save-stages", str(root / "cli_stages")]) == 0
    assert sorted(p.name for p in (root / "cli_stages").iterdir()) == sorted(STAGE_FILES)
    assert main(["quantize", str(root / "m.keras"), "--min-max-log", log, "--calib", str(root / "calib.npy"),
                 "-o", str(root / "cli2.pb"), "--report", str(root / "r.html"), "--no-progress"]) == 0
    assert "<table>" in (root / "r.html").read_text()
    capfd.readouterr()
