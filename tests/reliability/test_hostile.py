"""Hostile inputs, by class: each class is a mechanism (safe loading, the file gate, the argument gate, bounded
calibration, the data-form checks, the output checks) and each test here runs that mechanism over generated cases.

Every case runs under a time limit (``within``): a hang fails the test instead of stalling the suite. A case ends
in a KQuantError subclass whose message names the problem and the fix (and, on the command line, in exit status 2
with one ``kquant: error:`` line and no output file), or in the documented result.
"""

from __future__ import annotations

import os
import shutil
import socket
import zipfile

import numpy as np
import pytest
import tensorflow as tf

import kquant
from kquant.errors import (CalibrationDataError, ConfigurationError, DataError, KQuantError, ModelFormatError,
                           ModelInputError, ModelNotFoundError, OutputWriteError, TransformError, UnsafeModelError)
from tests.reliability.conftest import assert_one_error_line, run_cli, samples, unprivileged, within

def cli_error(argv, capfd, *fragments) -> str:
    with within():
        return assert_one_error_line(argv, capfd, *fragments)


# --- 1. code in model files: nothing runs unless asked ------------------------------------------------------------

def _marker_lambda(marker):
    """A lambda whose body touches ``marker``: compiled from source so its bytecode holds the path (Keras stores the
    bytecode, not the closure)."""
    return eval(f"lambda x: (__import__('pathlib').Path({str(marker)!r}).touch(), x)[1]")  # noqa: S307


def _save_with_lambda(module, path, marker, nested: bool):
    layers = module.layers
    inner = [layers.Dense(3), layers.Lambda(_marker_lambda(marker), name="touches_marker")]
    if nested:  # the Lambda inside a sub-model: found wherever it sits in the config
        inner = [module.Sequential([module.Input((6,)), *inner], name="block")]
    module.Sequential([module.Input((6,)), *inner]).save(path)
    marker.unlink(missing_ok=True)  # building the model ran the lambda once


CODE_FILES = {  # name -> (Keras module, file suffix, Lambda inside a sub-model)
    "tf_keras_h5": ("tf_keras", ".h5", False),
    "tf_keras_h5_nested": ("tf_keras", ".h5", True),
    "keras3_keras": ("keras", ".keras", False),
    "keras3_keras_nested": ("keras", ".keras", True),
    "tf_keras_keras": ("tf_keras", ".keras", False),
}


@pytest.fixture(scope="module")
def code_files(tmp_path_factory) -> dict:
    import importlib

    root = tmp_path_factory.mktemp("code_files")
    files = {}
    for name, (module, suffix, nested) in CODE_FILES.items():
        marker = root / f"{name}.ran"
        _save_with_lambda(importlib.import_module(module), root / f"{name}{suffix}", marker, nested)
        files[name] = (root / f"{name}{suffix}", marker)
    return files


@pytest.mark.parametrize("name", CODE_FILES)
def test_lambda_code_never_runs_in_safe_mode(name, code_files, small_files, tmp_path, capfd):
    path, marker = code_files[name]
    with within(), pytest.raises(UnsafeModelError, match="touches_marker|Lambda") as caught:
        kquant.freeze(path)
    assert "safe_mode=False (--unsafe-deserialization)" in str(caught.value)
    with within(), pytest.raises(UnsafeModelError):
        kquant.quantize(path, np.ones((4, 6), np.float32), progress=False)
    for argv in (["summarize", path], ["freeze", path, "-o", tmp_path / "o.pb"],
                 ["quantize", path, "--calib", small_files["calib"], "-o", tmp_path / "q.pb"]):
        cli_error(argv, capfd, "holds Python code", "--unsafe-deserialization")
    assert not marker.exists() and list(tmp_path.iterdir()) == []


def test_lambda_code_runs_when_asked(code_files, tmp_path, capfd):
    """The switch works (and the marker test above could fail): the code runs, the model freezes."""
    path, marker = code_files["tf_keras_h5"]
    assert kquant.freeze(path, safe_mode=False).outputs[0].shape == (None, 3)
    assert marker.exists()
    marker.unlink()
    code, _, err = run_cli(["freeze", path, "-o", tmp_path / "o.pb", "--unsafe-deserialization"], capfd)
    assert code == 0, err
    assert marker.exists()


FILE_OPS = {  # graph node -> it reads or writes files when the graph runs
    "write_file": lambda x, path: tf.io.write_file(path, tf.strings.as_string(tf.reduce_sum(x))),
    "read_file": lambda x, path: tf.strings.length(tf.io.read_file(path)),
    "print_to_file": lambda x, path: tf.print(x, output_stream=f"file://{path}"),
}


@pytest.mark.parametrize("op", FILE_OPS)
def test_graph_touching_files_is_refused_in_safe_mode(op, tmp_path):
    marker = tmp_path / "written"

    @tf.function(input_signature=[tf.TensorSpec((None, 2), tf.float32, name="x")])
    def model(x):
        effect = FILE_OPS[op](x, str(marker))
        with tf.control_dependencies([effect]):
            return tf.identity(x * 2.0)

    graph_def = model.get_concrete_function().graph.as_graph_def()
    with within(), pytest.raises(UnsafeModelError, match="reads or writes files or runs Python"):
        kquant.quantize(graph_def, np.ones((4, 2), np.float32), progress=False)
    assert not marker.exists()


# --- 2. the file gate: no FIFO, device or socket is opened; what cannot be read is one error naming it ----------

def _fifo(path):
    os.mkfifo(path)


def _zero_link(path):
    os.symlink("/dev/zero", path)


def _socket(path):
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    return sock


SPECIAL_FILES = {"fifo": (_fifo, "is a FIFO"), "dev_zero_link": (_zero_link, "is a character device"),
                 "socket": (_socket, "is a socket")}
READ_ROLES = {  # where a path is read -> (command line with {path}, file name)
    "model_pb": (["summarize", "{path}"], "m.pb"),
    "model_h5": (["freeze", "{path}", "-o", "{out}"], "m.h5"),
    "model_keras": (["freeze", "{path}", "-o", "{out}"], "m.keras"),
    "calib": (["quantize", "{pb}", "--calib", "{path}", "-o", "{out}"], "c.npy"),
    "min_max_log": (["quantize", "{pb}", "--calib", "{calib}", "--min-max-log", "{path}", "-o", "{out}"], "log.txt"),
    "bench_data": (["bench", "{pb}", "--data", "{path}", "--runs", "1", "--batch", "1"], "d.npz"),
    "bench_labels": (["bench", "{pb}", "--data", "{calib}", "--labels", "{path}", "--runs", "1", "--batch", "1"], "l.npy"),
    "checkpoint": (["freeze", "{pb}", "--checkpoint", "{stem}", "--outputs", "x", "-o", "{out}"], "ck.index"),
    "saved_model_file": (["summarize", "{dir}"], "saved/saved_model.pb"),
    "saved_model_variables": (["summarize", "{dir}"], "saved/variables/variables.index"),
}


@pytest.mark.parametrize("role", READ_ROLES)
@pytest.mark.parametrize("kind", SPECIAL_FILES)
def test_special_files_are_refused_without_opening_them(kind, role, small_files, tf_keras_saved_model, tmp_path, capfd):
    make, what = SPECIAL_FILES[kind]
    template, name = READ_ROLES[role]
    path = tmp_path / name
    if "{dir}" in template:  # a real SavedModel with one of its files replaced
        shutil.copytree(tf_keras_saved_model, tmp_path / "saved")
        path.unlink()
    keep = make(path)
    out = tmp_path / "out.pb"
    values = {"path": path, "out": out, "pb": small_files["pb"], "calib": small_files["calib"],
              "stem": path.with_suffix(""), "dir": tmp_path / "saved"}
    argv = [str(values[arg[1:-1]]) if arg.startswith("{") else arg for arg in template]
    try:
        cli_error(argv, capfd, str(path), what, "not a regular file")
    finally:
        if keep is not None:
            keep.close()
    assert not out.exists()


def _deep_pbtxt(depth: int) -> bytes:
    """A Const whose attribute nests ``depth`` function attributes (AttrValue -> NameAttrList -> AttrValue ...)."""
    return (b"node { name: 'a' op: 'Const' attr { key: 'value' value { "
            + b"func { name: 'f' attr { key: 'k' value { " * depth + b"b: true" + b" } } }" * depth + b" } } }")


def _npy_header(shape, descr="<f4") -> bytes:
    import io

    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def _npz(members: dict) -> bytes:
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _npy_bytes(array) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


BAD_ARRAY_FILES = {  # name -> (bytes, fragment)
    "pickled.npy": (_npy_bytes(np.array([None, 1], dtype=object)), "holds Python objects"),
    "huge_header.npy": (_npy_header((2**47, 1024)), "of memory is available"),
    "truncated.npy": (_npy_bytes(samples(4))[:200], "truncated"),
    "bad_header.npy": (b"\x93NUMPY\x01\x00\x10\x00{'descr': 12}    \n", "damaged .npy header"),
    "text.npy": (b"not numpy at all", "not a .npy or .npz file"),
    "pickled_member.npz": (_npz({"x.npy": _npy_bytes(np.array([{}], dtype=object))}), "holds Python objects"),
    "huge_member.npz": (_npz({"x.npy": _npy_header((2**40, 2**9))}), "of memory is available"),
    "corrupt_member.npz": (_npz({"x.npy": b"\x93NUMPY garbage"}), "damaged .npy header"),
    "truncated_archive.npz": (_npz({"x.npy": _npy_bytes(samples(4))})[:300], "damaged .npz archive"),
    "no_arrays.npz": (_npz({"readme.txt": b"hi"}), "holds no arrays"),
}


@pytest.mark.parametrize("name", BAD_ARRAY_FILES)
def test_bad_array_files_are_one_error_naming_the_file(name, small_files, tmp_path, capfd):
    content, fragment = BAD_ARRAY_FILES[name]
    path = tmp_path / name
    path.write_bytes(content)
    with within(), pytest.raises(DataError, match=fragment):
        kquant.files.load_arrays(path)
    out = tmp_path / "q.pb"
    cli_error(["quantize", small_files["pb"], "--calib", path, "-o", out], capfd, str(path), fragment)
    cli_error(["bench", small_files["pb"], "--data", small_files["calib"], "--labels", path, "--runs", "1"], capfd,
              f"labels {path}", fragment)
    assert not out.exists()


BAD_GRAPH_FILES = {  # name -> (bytes, fragment)
    "deep_3000.pbtxt": (_deep_pbtxt(3000), "not a valid text|nested too deeply"),
    "deep_30000.pbtxt": (_deep_pbtxt(30000), "not a valid text|nested too deeply"),
}


@pytest.mark.parametrize("name", BAD_GRAPH_FILES)
def test_pathological_graph_files_are_format_errors(name, tmp_path, capfd):
    content, fragment = BAD_GRAPH_FILES[name]
    path = tmp_path / name
    path.write_bytes(content)
    with within(), pytest.raises(ModelFormatError, match=fragment):
        kquant.summarize_graph(path)
    cli_error(["summarize", path], capfd, str(path))


@pytest.mark.parametrize("target", ["model_dir", "model_file", "calib"])
def test_unreadable_paths_are_one_error_line(target, small_files, world_readable_dir, capfd):
    locked = world_readable_dir / "locked"
    locked.mkdir()
    inside = locked / ("small.pb" if target != "calib" else "calib.npy")
    inside.write_bytes((small_files["pb"] if target != "calib" else small_files["calib"]).read_bytes())
    path = locked if target == "model_dir" else inside
    locked.chmod(0o700)
    argv = ["summarize", path] if target != "calib" else \
        ["quantize", small_files["pb"], "--calib", path, "-o", world_readable_dir / "q.pb"]
    with unprivileged():
        cli_error(argv, capfd, str(path), "Permission denied")


# --- 3. the argument gate: every public parameter, a ConfigurationError naming it ---------------------------------

def _predict_none(predict):
    return None


BAD_ARGUMENTS = [  # (function, keyword, value, fragment of what is expected)
    ("quantize", "batch_size", "64", "an integer of at least 1"),
    ("quantize", "batch_size", 2.5, "an integer of at least 1"),
    ("quantize", "batch_size", None, "an integer of at least 1"),
    ("quantize", "batch_size", True, "an integer of at least 1"),
    ("quantize", "calibration_options", {"percentile": "99.9"}, "a number"),
    ("quantize", "calibration_options", [("percentile", 99.9)], "a dict option name -> value"),
    ("quantize", "calibration_options", {"bogus": 1}, "an option of calibration 'percentile': percentile, symmetric"),
    ("quantize", "calibration_options", {"symmetric": 1}, "True or False"),
    ("quantize", "calibration_options", {"percentile": 20.0}, "percentile must be in (50, 100], got 20.0"),
    ("quantize", "max_accuracy_drop", "0.01", "a number"),
    ("quantize", "max_accuracy_drop", float("nan"), "a number"),
    ("quantize", "max_accuracy_drop", -0.1, "a number in [0"),
    ("quantize", "excluded_ops", 5, "a name or a list of names"),
    ("quantize", "excluded_nodes", ["a", 3], "a name or a list of names"),
    ("quantize", "per_channel", "yes", "True or False"),
    ("quantize", "stem", "bf16", "one of 'fp32', 'int8'"),
    ("quantize", "fallback", "int4", "one of 'fp32', 'bf16'"),
    ("quantize", "kernels", 1, "one of 'onednn', 'public'"),
    ("quantize", "calibration", ["minmax"], "one of 'minmax'"),
    ("quantize", "max_trials", 0, "an integer of at least 1"),
    ("quantize", "max_batches", "2", "an integer of at least 1 or None"),
    ("quantize", "relative", "no", "True or False"),
    ("quantize", "progress", "no", "True or False"),
    ("quantize", "eval_fn", "accuracy", "a function predict -> score"),
    ("quantize", "eval_fn", _predict_none, "eval_fn returned None; it must return a finite number"),
    ("quantize", "inputs", 7, "a name or a list of names"),
    ("quantize", "signature", 5, "a signature name"),
    ("quantize", "safe_mode", "off", "True or False"),
    ("quantize", "input_shapes", 2.5, "input_shapes=2.5 is not a shape for x"),
    ("quantize", "input_shapes", {"x": None}, "is not a shape for x (the rank is unknown)"),
    ("quantize", "input_shapes", "0.01", "is not a shape"),
    ("freeze", "input_shapes", (None, 5), "input_shapes=(None, 5) does not fit the model"),
    ("freeze", "input_shapes", "abc", "is not a shape"),
    ("freeze", "outputs", 3, "a name or a list of names"),
    ("freeze", "signature", "serving_default", "applies to SavedModel directories only"),
    ("freeze", "checkpoint", 5, "a checkpoint prefix"),
    ("freeze", "custom_objects", ["Doubled"], "a dict name -> class"),
    ("benchmark", "runs", "3", "an integer of at least 1"),
    ("benchmark", "batches", "1", "pass positive integers"),
    ("benchmark", "progress", None, "True or False"),
    ("GraphConverter", "excluded_ops", 3, "a name or a list of names"),
    ("GraphConverter", "stem", "none", "one of 'fp32', 'int8'"),
    ("GraphConverter", "per_channel", 1, "True or False"),
    ("GraphConverter.convert", "batch_size", "64", "an integer of at least 1"),
    ("GraphConverter.convert", "calibration", "nope", "one of 'minmax'"),
    ("GraphConverter.convert", "max_batches", -1, "an integer of at least 1"),
    ("transform_graph", "transforms", None, "a transform string"),
    ("transform_graph", "file_name", "../x.pb", "a file name"),
    ("apply_transforms", "transforms", 5, "a transform string"),
    ("apply_transforms", "outputs", 5, "a name or a list of names"),
    ("summarize_graph", "path_or_graph", None, "a .pb/.pbtxt path, a GraphDef or a FrozenGraph"),
    ("summarize_graph", "path_or_graph", "keras_model", "freeze it first"),
]


def _call(function, keyword, value, small_cnn, small_frozen, small_files, tmp_path):
    data = samples(8)
    if function == "quantize":
        method = {"calibration": "percentile"} if keyword == "calibration_options" else {}
        return kquant.quantize(small_frozen, data, **{"progress": False, **method, keyword: value})
    if function == "freeze":
        return kquant.freeze(small_cnn, **{keyword: value})
    if function == "benchmark":
        return kquant.benchmark(small_frozen, **{"runs": 1, "batches": (1,), "progress": False, keyword: value})
    if function == "GraphConverter":
        return kquant.GraphConverter(small_files["pb"], tmp_path / "q.pb", None, None, **{keyword: value})
    if function == "GraphConverter.convert":
        converter = kquant.GraphConverter(small_files["pb"], tmp_path / "q.pb", None, None)
        return converter.convert(data, **{"progress": False, keyword: value})
    if function == "transform_graph":
        arguments = {"path_to_model": small_files["pb"], "save_dir": tmp_path, "file_name": "t.pb", "inputs": None,
                     "outputs": None, "transforms": "fold_constants", keyword: value}
        return kquant.transform_graph(**arguments)
    if function == "apply_transforms":
        return kquant.transforms.apply_transforms(small_frozen, **{"transforms": "fold_constants", keyword: value})
    return kquant.summarize_graph(small_cnn if value == "keras_model" else value)


@pytest.mark.parametrize("function, keyword, value, expected", BAD_ARGUMENTS,
                         ids=[f"{f}-{k}-{v!r}"[:60] for f, k, v, _ in BAD_ARGUMENTS])
def test_bad_argument_is_a_configuration_error_naming_it(function, keyword, value, expected, small_cnn, small_frozen,
                                                         small_files, tmp_path):
    with within(), pytest.raises(ConfigurationError) as caught:
        _call(function, keyword, value, small_cnn, small_frozen, small_files, tmp_path)
    message = str(caught.value)
    assert expected in message and "\n" not in message
    if "is not valid" in message:
        assert message.startswith(f"{keyword}=") or f"[{next(iter(value))!r}]" in message
    assert list(tmp_path.iterdir()) == []


def test_excluded_ops_as_one_string_is_one_name(small_frozen):
    """excluded_ops="MatMul" keeps MatMul in fp32 (a string is one name, not its characters)."""
    ops = kquant.quantize(small_frozen, samples(8), excluded_ops="MatMul", stem="int8", progress=False).op_counts()
    assert ops.get("MatMul") == 1 and "_FusedQuantizedConv2D" in ops
    assert "_QuantizedMatMul" not in ops and "_FusedQuantizedMatMul" not in ops


BAD_TRANSFORM_ARGUMENTS = {
    "fold_keras_batch_norms(bogus=1)": "takes no argument 'bogus'; it accepts ignore_errors",
    "strip_unused_nodes(type=notatype)": "type='notatype' is not a TensorFlow dtype",
    "strip_unused_nodes(shape=\"1,x\")": "is not a shape",
    "fold_constants(bogus=1)": "takes no argument 'bogus'; it accepts clear_output_shapes",
    "quantize_weights(minimum_size=big)": "minimum_size='big' is not an integer",
    "insert_logging(show_name=maybe)": "show_name='maybe' is not true or false",
    "freeze_requantization_ranges(min_percentile=x)": "min_percentile='x' is not a number",
    "remove_freeze_leftovers(ignore_errors=1, op=Identity)": "takes no argument 'op'",
}


@pytest.mark.parametrize("text", BAD_TRANSFORM_ARGUMENTS)
def test_transform_arguments_are_checked_against_the_declared_ones(text, small_frozen, small_files, tmp_path, capfd):
    with pytest.raises(TransformError, match=BAD_TRANSFORM_ARGUMENTS[text].replace("(", r"\(")):
        kquant.transforms.apply_transforms(small_frozen, text)
    cli_error(["transform", small_files["pb"], "-o", tmp_path / "t.pb", "--transforms", text], capfd,
              BAD_TRANSFORM_ARGUMENTS[text])


def test_declared_stock_parameters_are_accepted(small_frozen):
    result = kquant.transforms.apply_transforms(
        small_frozen, 'fold_constants(clear_output_shapes=true, ignore_errors=true) '
                      'strip_unused_nodes(type=float, shape="1,8,8,2") quantize_weights(minimum_size=4000)')
    assert isinstance(result, kquant.FrozenGraph)


# --- 4. bounded work: endless data ends; Ctrl-C leaves nothing behind ---------------------------------------------

def test_endless_dataset_stops_at_max_batches(small_frozen):
    seen = []

    def endless():
        while True:
            seen.append(1)
            yield samples(4, seed=len(seen))

    with within():
        kquant.quantize(small_frozen, endless(), max_batches=3, progress=False)
    assert len(seen) == 3


def test_endless_dataset_stops_at_the_default_with_one_warning(small_frozen, monkeypatch):
    from kquant.quantization import config

    monkeypatch.setattr(config, "DEFAULT_CALIBRATION_SAMPLES", 40)
    dataset = tf.data.Dataset.from_tensor_slices(samples(16)).batch(8).repeat()
    with within(), pytest.warns(UserWarning) as caught:
        kquant.quantize(small_frozen, dataset, progress=False)
    messages = [str(w.message) for w in caught if "calibration stopped" in str(w.message)]
    assert messages == ["calibration stopped after 40 samples (5 batches) with data left; pass max_batches=N "
                        "(--calib-batches N) to calibrate on more"]


def test_calib_batches_on_the_command_line(small_files, tmp_path, capfd, monkeypatch):
    from kquant.quantization import collect

    counted = []
    real = collect.collect_ranges
    monkeypatch.setattr(collect, "collect_ranges", lambda g, i, t, batches, **kw: real(
        g, i, t, (counted.append(1) or b for b in batches), **kw))
    code, _, err = run_cli(["quantize", small_files["pb"], "--calib", small_files["calib"], "-o", tmp_path / "q.pb",
                            "--batch-size", "2", "--calib-batches", "3", "--no-progress"], capfd)
    assert code == 0, err
    assert len(counted) == 3


INTERRUPTED_COMMANDS = {
    "summarize": ["summarize", "{pb}"],
    "freeze": ["freeze", "{pb}", "-o", "{out}/f.pb"],
    "transform": ["transform", "{pb}", "-o", "{out}/t.pb"],
    "quantize": ["quantize", "{pb}", "--calib", "{calib}", "-o", "{out}/q.pb", "--report", "{out}/r.html",
                 "--export", "{out}/saved"],
    "bench": ["bench", "{pb}", "--runs", "1", "--json", "{out}/b.json"],
}


INTERRUPTIONS = [(command, "reading") for command in INTERRUPTED_COMMANDS] + [("quantize", "running"), ("bench", "running")]


@pytest.mark.parametrize("command, where", INTERRUPTIONS)
def test_ctrl_c_exits_130_and_leaves_nothing(command, where, small_files, tmp_path, capfd, monkeypatch):
    """Ctrl-C while the model is read, or while the graph runs: exit 130, one line, no output or temporary file."""
    from kquant import files, runtime

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    if where == "reading":
        monkeypatch.setattr(files, "checked_path", interrupt)
    else:
        real = runtime.GraphRunner.__call__
        monkeypatch.setattr(runtime.GraphRunner, "__call__", lambda self, *a: interrupt() if a else real(self, *a))
    out = tmp_path / "out"
    out.mkdir()
    argv = [arg.format(pb=small_files["pb"], calib=small_files["calib"], out=out) for arg in INTERRUPTED_COMMANDS[command]]
    code, stdout, err = run_cli(argv + ["--no-progress"] * (command in ("quantize", "bench")), capfd)
    assert (code, err) == (130, "kquant: interrupted\n")
    assert list(out.iterdir()) == []


# --- 5. data forms as documented ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_input_model():
    import keras

    keras.utils.set_random_seed(0)
    a, b = keras.Input((4,), name="a"), keras.Input((3,), name="b")
    joined = keras.layers.Concatenate()([keras.layers.Dense(5)(a), keras.layers.Dense(5)(b)])
    return kquant.freeze(keras.Model([a, b], keras.layers.Dense(2)(joined)))


def _two_inputs(rows=16):
    rng = np.random.default_rng(0)
    return rng.random((rows, 4), dtype=np.float32), rng.random((rows, 3), dtype=np.float32)


GOOD_DATA_FORMS = {
    "dataset_of_dict_pairs": lambda a, b: tf.data.Dataset.from_tensor_slices(({"a": a, "b": b}, np.zeros(len(a)))).batch(4),
    "dataset_of_tuple_pairs": lambda a, b: tf.data.Dataset.from_tensor_slices(((a, b), np.zeros(len(a)))).batch(4),
    "generator_of_triples": lambda a, b: iter([((a[:8], b[:8]), np.zeros(8), np.ones(8)), ((a[8:], b[8:]), np.zeros(8), None)]),
    "dict_pair": lambda a, b: ({"a": a, "b": b}, np.zeros(len(a))),
    "tensors": lambda a, b: [tf.constant(a), tf.constant(b)],
    "dict_of_tensors": lambda a, b: {"a": tf.constant(a), "b": tf.constant(b)},
}


@pytest.mark.parametrize("form", GOOD_DATA_FORMS)
def test_documented_data_forms_calibrate_like_plain_arrays(form, two_input_model):
    a, b = _two_inputs()
    plain = kquant.quantize(two_input_model, [a, b], progress=False)
    with within():
        other = kquant.quantize(two_input_model, GOOD_DATA_FORMS[form](a, b), progress=False)
    assert other.result.ranges == plain.result.ranges
    np.testing.assert_array_equal(other.predict([a, b]), plain.predict([a, b]))


def test_a_tensor_for_one_input_is_whole_data(small_frozen):
    plain = kquant.quantize(small_frozen, samples(16), progress=False)
    tensor = kquant.quantize(small_frozen, tf.constant(samples(16)), progress=False)
    assert tensor.result.ranges == plain.result.ranges


BAD_DATA_FORMS = {
    "ragged_rows": (lambda a, b: [a[:8], b[:6]], "a different number of rows per input (a: 8, b: 6)"),
    "ragged_dict": (lambda a, b: {"a": a[:8], "b": b[:6]}, "a different number of rows per input (a: 8, b: 6)"),
    "ragged_batch": (lambda a, b: iter([(a[:4], b[:3])]), "a different number of rows per input (a: 4, b: 3)"),
    "path_string": (lambda a, b: "calib.npz", "is a path or string ('calib.npz'), not data; load it first"),
    "path_object": (lambda a, b: __import__("pathlib").Path("calib.npz"), "load it first, e.g. np.load(path)"),
    "number": (lambda a, b: 3.0, "float is not usable as data"),
}


@pytest.mark.parametrize("form", BAD_DATA_FORMS)
def test_wrong_data_forms_are_named(form, two_input_model):
    make, fragment = BAD_DATA_FORMS[form]
    with within(), pytest.raises(CalibrationDataError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        kquant.quantize(two_input_model, make(*_two_inputs()), progress=False)


def _function_library_graph(channels: int):
    """A GraphDef whose convolution sits in a function of its library, called through PartitionedCall."""
    weights = np.random.default_rng(0).standard_normal((3, 3, channels, 6)).astype(np.float32)

    @tf.function
    def inner(x):
        return tf.nn.relu(tf.nn.conv2d(x, tf.constant(weights), 1, "SAME"))  # a Const inside the function

    @tf.function(input_signature=[tf.TensorSpec((None, 8, 8, channels), tf.float32, name="x")])
    def outer(x):
        return tf.reduce_mean(inner(x), axis=[1, 2])

    return outer.get_concrete_function().graph.as_graph_def()


@pytest.mark.parametrize("channels", [2, 8])
def test_function_library_convolutions_are_inlined_and_quantized(channels):
    graph_def = _function_library_graph(channels)
    assert any(node.op == "PartitionedCall" for node in graph_def.node)
    x = np.random.default_rng(1).random((16, 8, 8, channels), dtype=np.float32)
    qmodel = kquant.quantize(graph_def, x, stem="int8", progress=False)
    assert "PartitionedCall" not in qmodel.op_counts() and qmodel.op_counts().get("_FusedQuantizedConv2D") == 1
    reference = kquant.runtime.Predictor(kquant.freeze(graph_def))(x)
    assert np.abs(qmodel.predict(x) - reference).max() < 0.05 * np.abs(reference).max()


BATCH_INDEPENDENT_OUTPUTS = {
    "mean_over_rows": lambda x: tf.reduce_mean(tf.matmul(x, tf.ones((5, 3))), axis=0),
    "scalar": lambda x: tf.reduce_sum(tf.matmul(x, tf.ones((5, 3)))),
}


@pytest.mark.parametrize("output", BATCH_INDEPENDENT_OUTPUTS)
def test_batch_independent_outputs_are_never_glued_across_chunks(output):
    @tf.function(input_signature=[tf.TensorSpec((None, 5), tf.float32, name="x")])
    def model(x):
        return BATCH_INDEPENDENT_OUTPUTS[output](x)

    x = np.random.default_rng(0).random((300, 5), dtype=np.float32)
    qmodel = kquant.quantize(model.get_concrete_function(), x, progress=False)
    whole = qmodel.predict(x, batch_size=300)
    assert np.shape(whole) == np.shape(BATCH_INDEPENDENT_OUTPUTS[output](tf.constant(x)))
    with pytest.raises(ModelInputError, match="does not follow the batch .* pass them in one call with batch_size=300"):
        qmodel.predict(x, batch_size=128)
    with pytest.raises(ModelInputError, match="does not follow the batch"):  # the benchmark's pass over the data too
        kquant.benchmark(model.get_concrete_function(), qmodel, batches=(32,), runs=1, data=x, progress=False)


def test_stateful_layer_is_a_clear_error():
    import keras

    model = keras.Sequential([keras.Input((4, 3), batch_size=2), keras.layers.LSTM(5, stateful=True)])
    with within(), pytest.raises(ModelFormatError, match="layer 'lstm.*' is stateful .* rebuild the model with stateful=False"):
        kquant.freeze(model)


def test_saved_model_pb_instead_of_its_folder(tf_keras_saved_model, capfd, tmp_path):
    path = tf_keras_saved_model / "saved_model.pb"
    with pytest.raises(ModelFormatError, match=f"pass the folder {tf_keras_saved_model}$"):
        kquant.freeze(path)
    cli_error(["freeze", path, "-o", tmp_path / "o.pb"], capfd, "is the graph file of a SavedModel", "pass the folder")


# --- 6. options that do not apply, output paths -----------------------------------------------------------------

NOT_APPLYING = {  # command line -> fragment
    "signature_on_pb": (["quantize", "{pb}", "--calib", "{calib}", "-o", "{out}/q.pb", "--signature", "s"],
                        "signature='s' applies to SavedModel directories only"),
    "signature_on_pb_summarize": (["summarize", "{pb}", "--signature", "s"], "applies to SavedModel directories only"),
    "signature_on_pb_transform": (["transform", "{pb}", "-o", "{out}/t.pb", "--signature", "s"],
                                  "applies to SavedModel directories only"),
    "signature_on_keras": (["freeze", "{keras}", "-o", "{out}/f.pb", "--signature", "s"], "is a Keras model"),
    "checkpoint_on_saved_model": (["freeze", "{saved}", "-o", "{out}/f.pb", "--checkpoint", "{pb}"],
                                  "checkpoint applies to TF1 GraphDefs only"),
    "missing_checkpoint": (["freeze", "{pb}", "-o", "{out}/f.pb", "--checkpoint", "/nonexistent"],
                           "checkpoint /nonexistent does not exist"),
    "keras_suffix_for_a_graph": (["freeze", "{pb}", "-o", "{out}/out.keras"], "-o {out}/out.keras: the file it writes "
                                                                               "needs the suffix .pb or .pbtxt"),
    "report_not_html": (["quantize", "{pb}", "--calib", "{calib}", "-o", "{out}/q.pb", "--report", "{out}/r.pb"],
                        "needs the suffix .html or .htm"),
    "report_is_output": (["quantize", "{pb}", "--calib", "{calib}", "-o", "{out}/q.pb", "--report", "{out}/q.pb"],
                         "needs the suffix .html"),
    "report_is_output_html": (["quantize", "{pb}", "--calib", "{calib}", "-o", "{out}/q.pbtxt", "--report", "{out}/q.html",
                               "--export", "{out}/q.pbtxt"], "--export and -o both name"),
    "json_not_json": (["bench", "{pb}", "--runs", "1", "--json", "{out}/b.txt"], "needs the suffix .json"),
}


@pytest.mark.parametrize("case", NOT_APPLYING)
def test_options_that_do_not_apply_and_clashing_outputs_are_errors(case, small_files, small_cnn, tf_keras_saved_model,
                                                                   tmp_path, capfd):
    out = tmp_path / "out"
    out.mkdir()
    keras_path = tmp_path / "m.keras"
    small_cnn.save(keras_path)
    values = {"pb": small_files["pb"], "calib": small_files["calib"], "out": out, "keras": keras_path,
              "saved": tf_keras_saved_model}
    argv, fragment = NOT_APPLYING[case]
    cli_error([arg.format(**values) for arg in argv], capfd, fragment.format(**values))
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.parametrize("writer", ["save", "export"])
def test_failed_write_removes_the_folders_it_created(depth, writer, small_frozen, tmp_path, monkeypatch):
    """A full disk (ENOSPC at the final rename): no output, no temporary file, no new folder."""
    import errno

    qmodel = kquant.quantize(small_frozen, samples(8), progress=False)
    target = tmp_path.joinpath(*[f"new{i}" for i in range(depth)]) / ("out.pb" if writer == "save" else "saved")

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    monkeypatch.setattr(type(tmp_path), "rename", full_disk)
    with pytest.raises(OutputWriteError, match="No space left on device"):
        qmodel.save(target) if writer == "save" else qmodel.export(target)
    assert list(tmp_path.iterdir()) == []


def test_missing_path_is_still_model_not_found(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        kquant.freeze(tmp_path / "nope", signature="serving_default")


def test_every_hostile_error_is_a_kquant_error():
    """The classes the corpus expects are all KQuantError subclasses (the CLI's one-line contract)."""
    for error in (DataError, CalibrationDataError, UnsafeModelError, ConfigurationError, OutputWriteError):
        assert issubclass(error, KQuantError)
    assert issubclass(UnsafeModelError, ModelFormatError) and issubclass(CalibrationDataError, DataError)


def test_a_call_that_stays_runs_fp32_with_a_warning_naming_it():
    """Keras 3 runs a grouped Conv2D (groups=2, not depthwise) as an XLA function call that nothing inlines:
    the call stays fp32, named in one warning, and the convolutions around it still quantize."""
    import keras

    inputs = keras.Input((8, 8, 4))
    y = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    y = keras.layers.Conv2D(8, 3, padding="same", groups=2, name="grouped")(y)
    y = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(y)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(y))
    x = np.random.default_rng(2).random((16, 8, 8, 4), dtype=np.float32)
    with within(), pytest.warns(UserWarning, match=r"1 call\(s\) into the graph's function library could not be inlined .*grouped"):
        qmodel = kquant.quantize(model, x, stem="int8", progress=False)
    counts = qmodel.op_counts()
    assert counts.get("StatefulPartitionedCall", 0) + counts.get("PartitionedCall", 0) == 1
    assert counts.get("_FusedQuantizedConv2D") == 2
    reference = model.predict(x, verbose=0)
    assert np.abs(qmodel.predict(x) - reference).max() < 0.05 * np.abs(reference).max()


def test_tf_keras_grouped_convs_inline_and_quantize_where_int8_can_run_them():
    """tf_keras runs grouped convs as function calls too: a depthwise-grouped one (groups = channels) becomes an
    int8 depthwise conv, one with groups=2 is inlined as a grouped Conv2D that no int8 kernel runs, kept fp32."""
    import tf_keras

    inputs = tf_keras.Input((8, 8, 4))
    y = tf_keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    y = tf_keras.layers.Conv2D(8, 3, padding="same", groups=8, name="depthwise_grouped")(y)
    y = tf_keras.layers.Conv2D(8, 3, padding="same", groups=2, name="grouped")(y)
    model = tf_keras.Model(inputs, tf_keras.layers.GlobalAveragePooling2D()(y))
    x = np.random.default_rng(3).random((16, 8, 8, 4), dtype=np.float32)
    with within():
        qmodel = kquant.quantize(model, x, stem="int8", progress=False)
    counts = qmodel.op_counts()
    assert counts.get("_FusedQuantizedDepthwiseConv2D") == 1 and counts.get("Conv2D") == 1
    reference = model.predict(x, verbose=0)
    assert np.abs(qmodel.predict(x) - reference).max() < 0.05 * np.abs(reference).max()
