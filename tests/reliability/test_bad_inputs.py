"""A corpus of bad inputs: each ends in a KQuantError subclass naming the problem and the fix, and, on the
command line, in exit status 2 with exactly one stderr line. Never another exception type, never a traceback.

Already covered elsewhere and not repeated here: tests/test_cli.py (freeze/summarize of a missing, truncated,
random or broken file, a directory that is not a SavedModel, an unknown signature or output, TF1 checkpoints),
tests/quantization/test_api.py (empty, wrong-rank, wrong-shape, NaN and string calibration arrays; a model with
no quantizable op through the API), tests/test_freeze_keras.py (custom layers through the API).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import kquant
from kquant.errors import (CalibrationDataError, ConfigurationError, KQuantError, ModelFormatError, ModelNotFoundError,
                           NodeNotFoundError, SignatureNotFoundError, TransformError)
from tests.reliability.conftest import INPUT_SHAPE, assert_one_error_line, run_cli, run_kquant, samples, unprivileged

# name -> (error class, what went wrong, what to do): every message must hold both
BAD_MODELS = {
    "missing.pb": (ModelNotFoundError, "does not exist", "check the path"),
    "empty.pb": (ModelFormatError, "is empty", "re-export the model"),
    "truncated.pb": (ModelFormatError, "is not a valid binary GraphDef", "check the file is complete"),
    "random.pb": (ModelFormatError, "is not a valid binary GraphDef", "check the file is complete"),
    "broken.pbtxt": (ModelFormatError, "is not a valid text (pbtxt) GraphDef", "check the file is complete"),
    "not_a_saved_model": (ModelFormatError, "is a directory but not a SavedModel", "pass a SavedModel directory"),
    "model.onnx": (ModelFormatError, "unknown suffix '.onnx'", "kquant reads .keras, .h5, .pb"),
    "truncated.keras": (ModelFormatError, "is not a .keras (zip) archive", "save the model again"),
    "custom.keras": (ModelFormatError, "uses 'Doubled', a custom class Keras cannot find", "pass custom_objects"),
    "custom.h5": (ModelFormatError, "uses 'Doubled', a custom class Keras cannot find", "pass custom_objects"),
    "variables.pb": (ModelFormatError, "still holds variables", "pass its checkpoint"),
}
COMMANDS = {
    "summarize": ["summarize", "{model}"],
    "freeze": ["freeze", "{model}", "-o", "{out}"],
    "transform": ["transform", "{model}", "-o", "{out}"],
    "quantize": ["quantize", "{model}", "--calib", "{calib}", "-o", "{out}", "--no-progress"],
}
VALID_GRAPHS_FOR = {"summarize", "transform"}  # these read a .pb as it is: a graph with variables is fine for them
CLI_CASES = [(model, command) for model in BAD_MODELS for command in COMMANDS
             if not (model == "variables.pb" and command in VALID_GRAPHS_FOR)]


@pytest.fixture(scope="module")
def bad_models(small_files, tmp_path_factory) -> dict:
    """Every entry of BAD_MODELS as a path."""
    import keras
    import tf_keras

    root = tmp_path_factory.mktemp("bad_models")
    pb = small_files["pb"].read_bytes()
    contents = {"empty.pb": b"", "truncated.pb": pb[: len(pb) // 3], "random.pb": np.random.default_rng(3).bytes(2000),
                "broken.pbtxt": b"node { name: 'a' op: ", "model.onnx": b"\x08\x07onnx"}
    for name, content in contents.items():
        (root / name).write_bytes(content)
    (root / "not_a_saved_model").mkdir()
    (root / "not_a_saved_model" / "notes.txt").write_text("no model here")
    for name, module in (("custom.keras", keras), ("custom.h5", tf_keras)):
        module.Sequential([module.Input((6,)), module.layers.Dense(3), _doubled_layer(module)()]).save(root / name)
    keras_zip = root / "custom.keras"
    (root / "truncated.keras").write_bytes(keras_zip.read_bytes()[:1000])
    _write_graph_with_variables(root / "variables.pb")
    return {name: root / name for name in BAD_MODELS}


def _doubled_layer(module):
    class Doubled(module.layers.Layer):
        def call(self, x):
            return x * 2.0

    return Doubled


def _write_graph_with_variables(path) -> None:
    tf1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        x = tf1.placeholder(tf.float32, [None, 2], name="x")
        tf.matmul(x, tf1.get_variable("w", [2, 2], use_resource=False), name="y")
    path.write_bytes(graph.as_graph_def().SerializeToString())


def _args(template, **paths) -> list[str]:
    return [str(paths[arg[1:-1]]) if arg.startswith("{") else arg for arg in template]


@pytest.mark.parametrize("model, command", CLI_CASES, ids=[f"{m}-{c}" for m, c in CLI_CASES])
def test_bad_model_on_every_command_is_one_line_and_status_2(model, command, bad_models, small_files, tmp_path, capfd):
    error, problem, fix = BAD_MODELS[model]
    out = tmp_path / "out.pb"
    argv = _args(COMMANDS[command], model=bad_models[model], out=out, calib=small_files["calib"])
    assert_one_error_line(argv, capfd, str(bad_models[model]), problem, fix)
    assert not out.exists() and os.listdir(tmp_path) == []  # no output, no temporary file


@pytest.mark.parametrize("model", BAD_MODELS)
def test_bad_model_raises_its_error_class_through_the_api(model, bad_models):
    error, problem, fix = BAD_MODELS[model]
    with pytest.raises(error, match="; ") as caught:  # "problem; what to do"
        kquant.quantize(bad_models[model], samples(), progress=False)
    assert problem in str(caught.value) and fix in str(caught.value)


def test_custom_layer_error_goes_away_with_custom_objects(bad_models):
    import keras

    frozen = kquant.freeze(bad_models["custom.keras"], custom_objects={"Doubled": _doubled_layer(keras)})
    assert [o.shape for o in frozen.outputs] == [(None, 3)]


# --- damaged .pb files: every outcome is a KQuantError or a graph that works

DAMAGE_OFFSETS = 20


def _damaged(data: bytes, damage: str, index: int) -> bytes:
    offset = 1 + index * (len(data) - 2) // (DAMAGE_OFFSETS - 1)
    if damage == "truncate":
        return data[:offset]
    return data[:offset] + bytes([data[offset] ^ 0xFF]) + data[offset + 1:]


@pytest.mark.parametrize("index", range(DAMAGE_OFFSETS))
@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_pb_is_a_kquant_error_or_a_working_graph(damage, index, small_files, tmp_path):
    path = tmp_path / "damaged.pb"
    path.write_bytes(_damaged(small_files["pb"].read_bytes(), damage, index))
    try:
        kquant.summarize_graph(path)
        frozen = kquant.freeze(path)
    except KQuantError as exc:
        assert str(exc).strip()
        return
    try:
        qmodel = kquant.quantize(frozen, samples(), progress=False)
        result = qmodel.predict(samples(3))
    except KQuantError as exc:
        assert str(exc).strip()
        return
    # a cut can leave several dangling nodes as outputs, a constant among them: each has the shape its spec says
    outputs = result if isinstance(result, list) else [result]
    for spec, output in zip(qmodel.outputs, outputs, strict=True):
        assert np.asarray(output).shape == tuple(3 if d is None else d for d in spec.shape), spec


# --- .pbtxt syntax errors

PBTXT_ERRORS = {
    "unclosed_brace": (b"node { name: 'a' op: 'Const' ", "is not a valid text (pbtxt) GraphDef"),
    "unknown_field": (b"node { nam: 'a' }", "is not a valid text (pbtxt) GraphDef"),
    "bad_enum": (b"node { name: 'a' op: 'Const' attr { key: 'dtype' value { type: DT_BOGUS } } }",
                 "is not a valid text (pbtxt) GraphDef"),
    "number_for_string": (b"node { name: 5 }", "is not a valid text (pbtxt) GraphDef"),
    "string_for_number": (b"versions { producer: 'x' }", "is not a valid text (pbtxt) GraphDef"),
    "not_utf8": (b"node { name: '\xff\xfe' }", "is not a valid text (pbtxt) GraphDef"),
    "comment_only": (b"# nothing but a comment\n", "parsed as a GraphDef with no nodes"),
    "binary_in_pbtxt": (None, "is not a valid text (pbtxt) GraphDef"),
}


@pytest.mark.parametrize("case", PBTXT_ERRORS)
def test_pbtxt_syntax_error_is_a_format_error_naming_the_file(case, small_files, tmp_path, capfd):
    content, problem = PBTXT_ERRORS[case]
    path = tmp_path / "graph.pbtxt"
    path.write_bytes(small_files["pb"].read_bytes() if content is None else content)
    with pytest.raises(ModelFormatError, match=f"^{path}"):
        kquant.freeze(path)
    assert_one_error_line(["summarize", path], capfd, str(path), problem)


# --- signatures, node names, options

def test_unknown_signature_through_quantize(tf_keras_saved_model, small_files, tmp_path, capfd):
    with pytest.raises(SignatureNotFoundError, match="no signature 'nope'; it has score_only, serving_default"):
        kquant.quantize(tf_keras_saved_model, samples(), signature="nope", progress=False)
    assert_one_error_line(["quantize", tf_keras_saved_model, "--calib", small_files["calib"], "-o", tmp_path / "q.pb",
                           "--signature", "nope"], capfd, "no signature 'nope'", "choose one with signature=")


@pytest.mark.parametrize("role", ["inputs", "outputs"])
def test_unknown_node_names_through_quantize_and_transforms(role, small_frozen, small_files, tmp_path, capfd):
    singular = role[:-1]
    fragment = f"unknown {singular} node(s) nope; the graph's likely {role} are"
    with pytest.raises(NodeNotFoundError, match=re.escape(fragment)):
        kquant.quantize(small_frozen, samples(), progress=False, **{role: ["nope"]})
    with pytest.raises(NodeNotFoundError, match="unknown"):
        kquant.transforms.apply_transforms(small_frozen.graph_def, "fold_constants", **{role: ["nope"]})
    with pytest.raises(NodeNotFoundError, match="unknown"):
        kquant.transform_graph(small_files["pb"], tmp_path, "out.pb", **{"inputs": None, "outputs": None, role: "nope"},
                               transforms="fold_constants")
    assert_one_error_line(["transform", small_files["pb"], "-o", tmp_path / "out.pb", f"--{role}", "nope,x"],
                          capfd, fragment, "kquant summarize MODEL")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("transforms, fragment", [
    ("fold_constants((", "bad transform syntax at character 15"),
    ("fold_constnts", "did you mean fold_constants?"),
    ("fold_constants(ignore_errors=maybe)", "ignore_errors='maybe' is not true or false"),
    ("remove_freeze_leftovers(ignore_errors=maybe)", "ignore_errors='maybe' is not true or false"),
])
def test_bad_transform_string_is_a_transform_error(transforms, fragment, small_files, tmp_path, capfd):
    with pytest.raises(TransformError, match=re.escape(fragment)):
        kquant.transforms.apply_transforms(kquant.load_graph_def(small_files["pb"]), transforms)
    assert_one_error_line(["transform", small_files["pb"], "-o", tmp_path / "out.pb", "--transforms", transforms],
                          capfd, fragment)


@pytest.mark.parametrize("option, value, fragment", [
    ("--batch-size", "0", "batch_size=0 is not valid; expected an integer of at least 1"),
    ("--batch-size", "-3", "batch_size=-3 is not valid; expected an integer of at least 1"),
    ("--calibration", "bogus", "calibration='bogus' is not valid; expected one of 'minmax', 'percentile', 'kl'"),
])
def test_bad_quantize_option_is_a_configuration_error(option, value, fragment, small_files, tmp_path, capfd):
    name = option.lstrip("-").replace("-", "_")
    with pytest.raises(ConfigurationError, match=fragment):
        kquant.quantize(small_files["pb"], samples(), progress=False, **{name: int(value) if value.lstrip("-").isdigit() else value})
    assert_one_error_line(["quantize", small_files["pb"], "--calib", small_files["calib"], "-o", tmp_path / "q.pb",
                           "--no-progress", option, value], capfd, fragment)


# --- calibration data

def _batches_with_bad_second(bad):
    yield samples(4)
    yield bad


def _with_value(value):
    x = samples(4)
    x[1, 2, 3, 0] = value
    return x


BAD_CALIBRATION = {
    "inf": (np.full((4, *INPUT_SHAPE), np.inf, np.float32), "contains NaN or Inf; clean or drop those samples"),
    "one_minus_inf_in_a_later_batch": (lambda: _batches_with_bad_second(_with_value(-np.inf)), "contains NaN or Inf"),
    "one_nan_in_a_later_batch": (lambda: _batches_with_bad_second(_with_value(np.nan)), "contains NaN or Inf"),
    "wrong_shape_in_a_later_batch": (lambda: _batches_with_bad_second(samples(4)[:, :5]),
                                     "has shape (4, 5, 8, 2) but the model expects [?,8,8,2]; resize or reshape it"),
    "rank_5": (samples(4)[None], "has rank 5 (shape (1, 4, 8, 8, 2)) but the model expects rank 4"),
    "scalar_batches": (["a"], "has rank 0"),
    "complex": (samples(4).astype(np.complex64), "has dtype complex64; the model expects float32, convert it"),
    "object": (samples(4).astype(object), "has dtype object"),
    "empty_list": ([], "the calibration data is empty; pass at least one sample"),
    "empty_generator": (lambda: iter(()), "the calibration data is empty"),
    "wrong_key": ({"image": samples(4)}, "has no entry for input(s) x; its keys are image"),
    "none": (None, "NoneType is not usable as data; pass an array"),
}


@pytest.mark.parametrize("case", BAD_CALIBRATION)
def test_bad_calibration_data_is_named(case, small_frozen):
    data, fragment = BAD_CALIBRATION[case]
    with pytest.raises(CalibrationDataError, match=re.escape(fragment)):
        kquant.quantize(small_frozen, data() if callable(data) else data, progress=False)


BAD_CALIBRATION_FILES = {
    "wrong_shape.npy": (samples(4)[:, :5], "has shape (4, 5, 8, 2) but the model expects [?,8,8,2]"),
    "nan.npy": (np.full((4, *INPUT_SHAPE), np.nan, np.float32), "contains NaN or Inf"),
    "empty.npy": (samples(4)[:0], "the calibration data is empty"),
    "rank_2.npy": (samples(4).reshape(4, -1), "has rank 2 (shape (4, 128))"),
    "wrong_key.npz": ({"image": samples(4)}, "has no entry for input(s) x"),
    "pickled.npy": (np.array([None, 1], dtype=object), "cannot read calibration data"),
    "text.npy": (b"not numpy", "cannot read calibration data"),
    "missing.npy": (None, "cannot read calibration data"),
}


@pytest.mark.parametrize("name", BAD_CALIBRATION_FILES)
def test_bad_calibration_file_is_one_line_and_status_2(name, small_files, tmp_path, capfd):
    content, fragment = BAD_CALIBRATION_FILES[name]
    path = tmp_path / name
    if isinstance(content, dict):
        np.savez(path, **content)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        np.save(path, content, allow_pickle=True)
    out = tmp_path / "q.pb"
    assert_one_error_line(["quantize", small_files["pb"], "--calib", path, "-o", out, "--no-progress"], capfd, fragment)
    assert not out.exists()


# --- models kquant can only partly quantize

def test_model_without_quantizable_op_on_the_command_line_is_fp32_with_one_warning_line(tmp_path, capfd):
    import keras

    model = keras.Sequential([keras.Input((5,), name="x"), keras.layers.Activation("tanh")])
    model_path = kquant.freeze(model).save(tmp_path / "tanh.pb")
    x = np.random.default_rng(0).standard_normal((8, 5)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code, out, err = run_cli(["quantize", model_path, "--calib", tmp_path / "x.npy", "-o", tmp_path / "q.pb",
                              "--no-progress"], capfd)
    assert code == 0
    assert err.splitlines() == ["kquant: warning: the model has no quantizable Conv2D/DepthwiseConv2D/MatMul; "
                                "returning it in fp32"]
    with kquant.GraphRunner(kquant.load_graph_def(tmp_path / "q.pb"), ["x:0"], ["output_0:0"]) as run:
        np.testing.assert_allclose(run(x)[0], np.tanh(x), atol=1e-6)


def test_unsupported_ops_between_convs_stay_fp32_and_the_convs_quantize():
    import keras

    layers = keras.layers
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((10, 10, 3), name="image"),
        layers.Conv2D(8, 3, padding="same"), layers.Activation("tanh"),
        layers.Conv2D(8, 3, padding="same"), layers.Activation("sigmoid"), layers.LayerNormalization(),
        layers.Conv2D(4, 3, padding="same", activation="relu"), layers.GlobalAveragePooling2D(), layers.Dense(3),
    ])
    x = np.random.default_rng(0).random((48, 10, 10, 3), dtype=np.float32)
    qmodel = kquant.quantize(model, x[:32], stem="int8", progress=False)
    ops = qmodel.op_counts()
    assert ops["_FusedQuantizedConv2D"] == 3
    assert ops["Tanh"] == 1 and ops["Sigmoid"] == 1
    got, want = qmodel.predict(x[32:]), model.predict(x[32:], verbose=0)
    assert np.isfinite(got).all()
    assert np.abs(got - want).max() <= 0.05 * np.abs(want).max()


# --- oneDNN off, and the installed command

def test_onednn_disabled_raises_onednn_disabled_error_and_exits_2(small_files):
    """TF_ENABLE_ONEDNN_OPTS=0: quantize raises OneDNNDisabledError, ``kquant quantize`` exits 2 with one line."""
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        import kquant
        from kquant.cli import main
        from kquant.errors import OneDNNDisabledError
        try:
            kquant.quantize({str(small_files['pb'])!r}, np.load({str(small_files['calib'])!r}), progress=False)
        except OneDNNDisabledError as exc:
            print("OneDNNDisabledError:", exc)
        sys.exit(main(["quantize", {str(small_files['pb'])!r}, "--calib", {str(small_files['calib'])!r},
                       "-o", {str(small_files['pb'].with_name('never.pb'))!r}, "--no-progress"]))
    """)
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120,
                            cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert result.returncode == 2, result.stderr
    assert result.stdout.startswith("OneDNNDisabledError: oneDNN is disabled in this process (TF_ENABLE_ONEDNN_OPTS=0)")
    assert result.stderr.splitlines() == [
        "kquant: error: oneDNN is disabled in this process (TF_ENABLE_ONEDNN_OPTS=0), so TensorFlow's int8 kernels "
        "cannot run; set TF_ENABLE_ONEDNN_OPTS=1 in the environment before Python starts (or import kquant before "
        "tensorflow)"]
    assert not small_files["pb"].with_name("never.pb").exists()


def test_installed_command_on_a_truncated_graph_exits_2_with_one_line(bad_models, small_files, tmp_path):
    result = run_kquant("quantize", bad_models["truncated.pb"], "--calib", small_files["calib"], "-o", tmp_path / "q.pb")
    assert (result.returncode, result.stdout) == (2, "")
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(f"kquant: error: {bad_models['truncated.pb']} is not a valid binary GraphDef")
    assert list(tmp_path.iterdir()) == []


def test_unreadable_model_is_one_error_line(small_files, world_readable_dir, capfd):
    model = world_readable_dir / "private.pb"
    shutil.copy(small_files["pb"], model)
    model.chmod(0o600)
    with unprivileged():
        assert_one_error_line(["summarize", model], capfd, f"cannot read {model} (Permission denied)",
                              "check the file's permissions")
