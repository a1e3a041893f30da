"""The kquant command: summarize and freeze, in-process through cli.main and as a real subprocess."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kquant
from kquant.cli import main
from kquant.errors import KQuantError, ModelNotFoundError
from tests.conftest import check_matches, keras_reference, run_frozen


@pytest.fixture(scope="module")
def bad_inputs(conv_pb, keras_files, tmp_path_factory) -> dict:
    """Paths that are not readable models, by name."""
    root = tmp_path_factory.mktemp("bad")
    data = conv_pb.read_bytes()
    files = {
        "truncated.pb": data[: len(data) // 2],
        "random.pb": np.random.default_rng(7).bytes(3000),
        "broken.pbtxt": b"node { name: 'a' op: ",
        "truncated.keras": keras_files["keras3.keras"][0].read_bytes()[:1500],
    }
    for name, content in files.items():
        (root / name).write_bytes(content)
    (root / "not_a_saved_model").mkdir()
    (root / "not_a_saved_model" / "README").write_text("no model here")
    return {name: root / name for name in [*files, "not_a_saved_model", "missing.pb"]}


def test_summarize_pb(conv_pb, capfd):
    assert main(["summarize", str(conv_pb)]) == 0
    out, err = capfd.readouterr()
    assert out.splitlines()[:2] == [
        "Found 1 possible inputs: (name=image, type=float(1), shape=[?,28,28,1])",
        "Found 1 possible outputs: (name=probs, op=Identity)",
    ]
    assert err == ""


def test_summarize_keras_file(keras_files, capfd):
    assert main(["summarize", str(keras_files["tf_keras.h5"][0])]) == 0
    out = capfd.readouterr().out
    assert out.splitlines()[0] == ("Found 2 possible inputs: (name=image, type=float(1), shape=[?,8,8,1]) "
                                   "(name=meta, type=float(1), shape=[?,3])")
    assert out.splitlines()[1] == "Found 2 possible outputs: (name=label, op=Identity) (name=score, op=Identity)"


def test_summarize_saved_model_signature(tf_keras_saved_model, capfd):
    assert main(["summarize", str(tf_keras_saved_model), "--signature", "score_only"]) == 0
    assert capfd.readouterr().out.splitlines()[0] == "Found 1 possible inputs: (name=meta, type=float(1), shape=[?,3])"


def test_freeze_keras_file(keras_files, tmp_path, capfd):
    path, model = keras_files["keras3.keras"]
    out_path = tmp_path / "model.pb"
    assert main(["freeze", str(path), "-o", str(out_path)]) == 0
    out, err = capfd.readouterr()
    assert out.startswith(f"wrote {out_path} (")
    assert "inputs: image:0, meta:0; outputs: label:0, score:0" in out
    assert err == ""
    check_matches(kquant.freeze(out_path), keras_reference(model), [(8, 8, 1), (3,)])


def test_freeze_graph_with_checkpoint_and_outputs(tf1_graph, tmp_path, capfd):
    out_path = tmp_path / "model.pbtxt"
    args = ["freeze", str(tf1_graph.pb), "-o", str(out_path), "--checkpoint", tf1_graph.checkpoint, "--outputs", "y, z"]
    assert main(args) == 0
    assert capfd.readouterr().err == ""  # no deprecation warnings
    assert out_path.read_text().startswith("node {")
    frozen = kquant.freeze(out_path, outputs=["y", "z"])
    for inputs, expected in tf1_graph.cases:
        assert max(np.abs(g - e).max() for g, e in zip(run_frozen(frozen, inputs), expected)) <= 1e-5


def test_freeze_saved_model_signature_and_outputs(keras3_saved_model, tmp_path, capfd):
    out_path = tmp_path / "model.pb"
    assert main(["freeze", str(keras3_saved_model), "-o", str(out_path), "--signature", "serve", "--outputs", "output_1"]) == 0
    frozen = kquant.freeze(out_path)
    assert frozen.input_names == ["meta:0"] and frozen.output_names == ["output_1:0"]


BAD_INPUTS = {
    "missing_summarize": (["summarize", "{missing.pb}"], "missing.pb does not exist"),
    "missing_freeze": (["freeze", "{missing.pb}", "-o", "{out}"], "missing.pb does not exist"),
    "truncated_pb": (["summarize", "{truncated.pb}"], "is not a valid binary GraphDef"),
    "random_bytes_pb": (["freeze", "{random.pb}", "-o", "{out}"], "is not a valid binary GraphDef"),
    "broken_pbtxt": (["summarize", "{broken.pbtxt}"], "is not a valid text (pbtxt) GraphDef"),
    "not_a_saved_model": (["freeze", "{not_a_saved_model}", "-o", "{out}"], "is a directory but not a SavedModel"),
    "truncated_keras": (["summarize", "{truncated.keras}"], "truncated or corrupt"),
    "unknown_signature": (["freeze", "{saved_model}", "-o", "{out}", "--signature", "nope"],
                          "no signature 'nope'; it has score_only, serving_default"),
    "unknown_output": (["freeze", "{conv_pb}", "-o", "{out}", "--outputs", "probs,nope"],
                       "unknown output node(s) nope; the graph's likely outputs are probs"),
}


def check_one_error_line(argv, message, capfd) -> None:
    assert main(argv) == 2
    out, err = capfd.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1, err
    assert err.startswith("kquant: error: ")
    assert message in err


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_error_line_and_status_2(case, bad_inputs, conv_pb, tf_keras_saved_model, tmp_path, capfd):
    args, message = BAD_INPUTS[case]
    paths = {**bad_inputs, "out": tmp_path / "out.pb", "saved_model": tf_keras_saved_model, "conv_pb": conv_pb}
    check_one_error_line([str(paths[arg[1:-1]]) if arg.startswith("{") else arg for arg in args], message, capfd)
    assert not (tmp_path / "out.pb").exists()


@pytest.mark.parametrize("extra, message", [
    ([], "still holds variables"),
    (["--checkpoint", "{checkpoint}", "--outputs", "nope"], "unknown output node(s) nope"),
    (["--checkpoint", "{checkpoint}.missing", "--outputs", "z"], "does not exist (no "),
], ids=["no_checkpoint", "unknown_output", "missing_checkpoint"])
def test_bad_tf1_freeze_is_one_error_line(tf1_graph, extra, message, tmp_path, capfd):
    extra = [arg.replace("{checkpoint}", tf1_graph.checkpoint) for arg in extra]
    check_one_error_line(["freeze", str(tf1_graph.pb), "-o", str(tmp_path / "out.pb"), *extra], message, capfd)


def test_a_multi_line_error_message_is_printed_on_one_line(monkeypatch, capfd):
    def fail(*args, **kwargs):
        raise KQuantError("first part\n\n  second part\n")

    monkeypatch.setattr(kquant, "freeze", fail)
    assert main(["freeze", "model.keras", "-o", "out.pb"]) == 2
    assert capfd.readouterr().err == "kquant: error: first part second part\n"


@pytest.mark.parametrize("argv", [["--debug", "summarize", "missing.pb"], ["freeze", "missing.pb", "-o", "x.pb", "--debug"]])
def test_debug_lets_the_exception_through(argv, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotFoundError, match="missing.pb does not exist"):
        main(argv)


def test_no_command_prints_usage_and_returns_2(capfd):
    assert main([]) == 2
    assert "usage: kquant" in capfd.readouterr().out


def run_kquant(*args) -> subprocess.CompletedProcess:
    """The installed console script as a user runs it (about 5 s: it imports TensorFlow)."""
    beside = Path(sys.executable).parent / "kquant"
    command = str(beside) if beside.exists() else shutil.which("kquant")
    return subprocess.run([command, *map(str, args)], capture_output=True, text=True, timeout=120)


def test_subprocess_freeze_succeeds_quietly(conv_pb, conv_model, tmp_path):
    result = run_kquant("freeze", conv_pb, "-o", tmp_path / "out.pbtxt")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.startswith(f"wrote {tmp_path / 'out.pbtxt'} (")
    check_matches(kquant.freeze(tmp_path / "out.pbtxt"), keras_reference(conv_model), [(28, 28, 1)])


def test_subprocess_error_is_one_line_and_exit_2(tmp_path):
    result = run_kquant("freeze", tmp_path / "missing.pb", "-o", tmp_path / "never.pb")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [f"kquant: error: {tmp_path / 'missing.pb'} does not exist; check the path"]
    assert not (tmp_path / "never.pb").exists()


def test_subprocess_debug_shows_the_traceback(tmp_path):
    result = run_kquant("--debug", "summarize", tmp_path / "missing.pb")
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "kquant.errors.ModelNotFoundError" in result.stderr


@pytest.mark.parametrize(("argv", "named"), [
    (["quantize", "m.h5", "--calib", "c.npy", "-o", "o.pb", "--stem", "bf16"], "invalid choice: 'bf16'"),
    (["quantize", "m.h5"], "required: -o/--output"),
    (["frob"], "invalid choice: 'frob'"),
])
def test_usage_errors_are_one_line_naming_the_help(argv, named, capfd):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capfd.readouterr().err
    assert exit_info.value.code == 2
    assert err.count("\n") == 1 and named in err and "usage:" not in err
    assert err.rstrip().endswith("--help'")
