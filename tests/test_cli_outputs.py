"""All-or-nothing CLI outputs, the one warning channel and the command's help."""

import subprocess
import sys

import kquant
from kquant.cli import main

from .conftest import cli_quantize


def test_export_into_a_non_empty_directory_writes_nothing(cli_files, tmp_path, capfd):
    out = tmp_path / "q.pb"
    out.write_bytes(b"earlier")
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "keep.txt").write_text("x")
    assert cli_quantize(cli_files, out, "--export", str(tmp_path / "saved"), "--report", str(tmp_path / "r.html")) == 2
    assert "--export" in capfd.readouterr().err
    assert out.read_bytes() == b"earlier" and not (tmp_path / "r.html").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.pb", "saved"]


def test_a_failing_report_rolls_back_the_graph_and_the_savedmodel(cli_files, tmp_path, capfd):
    out = tmp_path / "q.pb"
    out.write_bytes(b"earlier")
    (tmp_path / "blocker").write_text("a file, so no report can be written under it")
    code = cli_quantize(cli_files, out, "--export", str(tmp_path / "saved"), "--report", str(tmp_path / "blocker" / "r.html"))
    assert code == 2 and capfd.readouterr().err.startswith("kquant: error:")
    assert out.read_bytes() == b"earlier"  # the earlier file at that path is back
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "q.pb"]  # no SavedModel, no backup left


def test_all_outputs_are_written_when_all_succeed(cli_files, tmp_path):
    out = tmp_path / "q.pb"
    out.write_bytes(b"earlier")
    assert cli_quantize(cli_files, out, "--export", str(tmp_path / "saved"), "--report", str(tmp_path / "r.html"),
                    "--save-stages", str(tmp_path / "stages")) == 0
    assert out.read_bytes() != b"earlier" and kquant.load_graph_def(out).node
    assert (tmp_path / "saved" / "saved_model.pb").exists() and (tmp_path / "r.html").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.pb", "r.html", "saved", "stages"]


def test_the_fuse_pad_and_conv_caveat_is_a_kquant_warning(cli_files, tmp_path, capfd):
    assert main(["transform", str(cli_files / "m.keras"), "-o", str(tmp_path / "t.pb"),
                 "--transforms", "fold_constants(ignore_errors=true) fuse_pad_and_conv"]) == 0
    err = capfd.readouterr().err
    assert err.startswith("kquant: warning: fuse_pad_and_conv: ") and err.count("\n") == 1


def test_help_describes_the_tool():
    help_text = subprocess.run([sys.executable, "-m", "kquant.cli", "--help"], capture_output=True, text=True).stdout
    assert "quantize them to calibrated int8 graphs" in help_text and "kquant quantize model.keras --calib" in help_text
