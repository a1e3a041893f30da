"""Bounded fuzzing: mutated GraphDefs, damaged bytes and random transform strings through summarize_graph,
apply_transforms/transform_graph and quantize. Nothing may escape but a KQuantError (or a valid result).

Budget: each target runs MAX_EXAMPLES hypothesis examples, derandomized (the same examples every run, so CI
is reproducible) and without a deadline. The API-parameter targets at the end mix hostile values into the
parameters of quantize, freeze/summarize_graph, transform_graph and benchmark, each example under a SIGALRM
time limit so that a hang fails instead of stalling.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorflow.core.framework import attr_value_pb2, graph_pb2, tensor_shape_pb2
from tensorflow.python.framework import tensor_util

import kquant
from kquant.errors import KQuantError
from kquant.transforms import all_transform_names, apply_transforms, optimize_for_inference_trans
from tests.reliability.conftest import samples, within

MAX_EXAMPLES = 60
FUZZ = settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

OP_TYPES = ["Conv2D", "DepthwiseConv2dNative", "MatMul", "BiasAdd", "Relu", "Relu6", "Identity", "Const",
            "Placeholder", "NoOp", "Reshape", "MaxPool", "AddV2", "Mul", "Tanh", "Pack", "Shape", "StridedSlice",
            "QuantizeV2", "FusedBatchNormV3", "NotAnOp"]
ATTR_VALUES = [
    attr_value_pb2.AttrValue(i=-1),
    attr_value_pb2.AttrValue(s=b"SAME"),
    attr_value_pb2.AttrValue(type=99),
    attr_value_pb2.AttrValue(type=0),
    attr_value_pb2.AttrValue(type=3),
    attr_value_pb2.AttrValue(f=float("nan")),
    attr_value_pb2.AttrValue(b=True),
    attr_value_pb2.AttrValue(list=attr_value_pb2.AttrValue.ListValue(i=[1, 2])),
    attr_value_pb2.AttrValue(shape=tensor_shape_pb2.TensorShapeProto(unknown_rank=True)),
    attr_value_pb2.AttrValue(tensor=tensor_util.make_tensor_proto(np.zeros((2, 3), np.float32))),
    attr_value_pb2.AttrValue(tensor=tensor_util.make_tensor_proto(np.array([np.nan, np.inf], np.float32))),
]
ATTR_KEYS = ["T", "dtype", "value", "padding", "strides", "data_format", "shape", "transpose_b", "axis"]
MUTATIONS = ["op", "drop_attr", "set_attr", "rewire", "drop_input", "add_input", "drop_node", "duplicate_node",
             "rename_node", "move_node"]

TRANSFORM_TOKENS = all_transform_names() + [
    "ignore_errors", "op", "type", "shape", "name", "Identity", "float", "true", "maybe", "-1", "1,2", "x", "(", ")",
    "=", ",", '"', " ", "\t", "é", "\\"]


@pytest.fixture(scope="module")
def seed_graphs(small_frozen) -> list:
    """Small real frozen graphs: the small CNN, and a Keras 3 CNN with every conv kind and batch norms."""
    import keras

    from tests.transforms.conftest import build_bn_cnn

    return [small_frozen.graph_def, kquant.freeze(build_bn_cnn(keras)).graph_def]


def mutate(data, graph_def) -> graph_pb2.GraphDef:
    """A copy of ``graph_def`` with 1-4 drawn mutations of op types, attributes, inputs and nodes."""
    graph = graph_pb2.GraphDef()
    graph.CopyFrom(graph_def)
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        if not graph.node:
            break
        kind = data.draw(st.sampled_from(MUTATIONS), label="kind")
        index = data.draw(st.integers(0, len(graph.node) - 1), label="node")
        node = graph.node[index]
        names = [n.name for n in graph.node]
        if kind == "op":
            node.op = data.draw(st.sampled_from(OP_TYPES))
        elif kind == "drop_attr" and node.attr:
            del node.attr[data.draw(st.sampled_from(sorted(node.attr)))]
        elif kind == "set_attr":
            key = data.draw(st.sampled_from(sorted(set(node.attr) | set(ATTR_KEYS))))
            node.attr[key].CopyFrom(data.draw(st.sampled_from(ATTR_VALUES)))
        elif kind == "rewire" and node.input:
            position = data.draw(st.integers(0, len(node.input) - 1))
            node.input[position] = data.draw(st.sampled_from(names + ["missing", f"^{names[0]}", node.name, f"{names[0]}:7"]))
        elif kind == "drop_input" and node.input:
            del node.input[data.draw(st.integers(0, len(node.input) - 1))]
        elif kind == "add_input":
            node.input.append(data.draw(st.sampled_from(names)))
        elif kind == "drop_node":
            del graph.node[index]
        elif kind == "duplicate_node":
            graph.node.add().CopyFrom(node)
        elif kind == "rename_node":
            node.name = data.draw(st.sampled_from(names + ["", "a:0", "bad name", "^x"]))
        elif kind == "move_node":
            nodes = list(graph.node)
            nodes.insert(data.draw(st.integers(0, len(nodes) - 1)), nodes.pop(index))
            del graph.node[:]
            graph.node.extend(nodes)
    return graph


def kquant_error_or(call):
    """``call()``'s result, or None when it raised a KQuantError with a message; anything else propagates."""
    try:
        return call()
    except KQuantError as exc:
        assert str(exc).strip(), type(exc).__name__
        return None


@FUZZ
@given(data=st.data())
def test_summarize_mutated_graph(seed_graphs, data):
    graph = mutate(data, data.draw(st.sampled_from(seed_graphs), label="seed"))
    summary = kquant_error_or(lambda: kquant.summarize_graph(graph))
    assert summary is None or summary.node_count == len(graph.node)


@FUZZ
@given(data=st.data())
def test_damaged_bytes_through_summarize_and_freeze(seed_graphs, data):
    serialized = bytearray(data.draw(st.sampled_from(seed_graphs), label="seed").SerializeToString())
    for _ in range(data.draw(st.integers(1, 6), label="edits")):
        position = data.draw(st.integers(0, len(serialized) - 1))
        edit = data.draw(st.sampled_from(["set", "insert", "delete", "truncate"]))
        if edit == "set":
            serialized[position] = data.draw(st.integers(0, 255))
        elif edit == "insert":
            serialized[position:position] = data.draw(st.binary(min_size=1, max_size=8))
        elif edit == "delete":
            del serialized[position:position + data.draw(st.integers(1, 8))]
        else:
            del serialized[position:]
        if not serialized:
            break
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "fuzzed.pb"
        path.write_bytes(bytes(serialized))
        kquant_error_or(lambda: kquant.summarize_graph(path))
        kquant_error_or(lambda: kquant.freeze(path))


transform_strings = st.one_of(
    st.lists(st.sampled_from(TRANSFORM_TOKENS), max_size=10).map("".join),
    st.lists(st.sampled_from(optimize_for_inference_trans + ["fold_constants(ignore_errors=true)",
                                                            'strip_unused_nodes(type=float, shape="1,8,8,2")',
                                                            "remove_nodes(op=Identity, op=CheckNumerics)",
                                                            "quantize_weights", "rename_op(old_op_name=Relu, new_op_name=Tanh)",
                                                            "sort_by_execution_order", "merge_duplicate_nodes"]),
             min_size=1, max_size=4).map(" ".join),
)


@FUZZ
@given(data=st.data())
def test_random_transform_strings_on_a_real_graph(small_frozen, data):
    text = data.draw(transform_strings, label="transforms")
    if data.draw(st.booleans(), label="damage the text"):
        position = data.draw(st.integers(0, len(text)))
        text = text[:position] + data.draw(st.sampled_from(["(", ")", '"', ",", "=", "", "x"])) + text[position + 1:]
    result = kquant_error_or(lambda: apply_transforms(small_frozen, text))
    assert result is None or isinstance(result, kquant.FrozenGraph)


@FUZZ
@given(data=st.data())
def test_transforms_on_mutated_graphs(seed_graphs, data):
    graph = mutate(data, data.draw(st.sampled_from(seed_graphs), label="seed"))
    transforms = data.draw(st.sampled_from([optimize_for_inference_trans, "fold_constants(ignore_errors=true) fold_batch_norms",
                                            "remove_freeze_leftovers fold_static_shapes", "strip_unused_nodes sort_by_execution_order"]))
    result = kquant_error_or(lambda: apply_transforms(graph, transforms))
    assert result is None or isinstance(result, graph_pb2.GraphDef)


def test_transform_graph_on_a_mutated_file(seed_graphs, tmp_path):
    """transform_graph (file in, file out) on one broken graph: a TransformError, and no output file."""
    graph = graph_pb2.GraphDef()
    graph.CopyFrom(seed_graphs[0])
    identity = next(node for node in graph.node if node.op == "Identity")
    identity.input[0] = identity.name  # an Identity reading itself: a cycle
    kquant.save_graph_def(graph, tmp_path / "cycle.pb")
    with pytest.raises(KQuantError, match="cycle"):
        kquant.transform_graph(tmp_path / "cycle.pb", tmp_path, "out.pb", None, None, "remove_freeze_leftovers")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cycle.pb"]


@FUZZ
@given(data=st.data())
def test_quantize_mutated_graph(seed_graphs, data):
    graph = mutate(data, seed_graphs[0])
    qmodel = kquant_error_or(lambda: kquant.quantize(graph, samples(8), progress=False))
    if qmodel is not None:
        kquant_error_or(lambda: qmodel.predict(samples(2)))


# --- the public API's parameters: hostile and valid values mixed; only a KQuantError may escape, nothing may hang

HOSTILE_VALUES = [None, "", "64", "MatMul", "0.01", 2.5, -1, 0, True, float("nan"), float("inf"), [], ["x", 3], {},
                  {"percentile": "99"}, (None, 5), b"bytes", object(), 10**12]
VALID_QUANTIZE_VALUES = {
    "per_channel": [True, False], "calibration": ["minmax", "percentile", "kl", "KL "],
    "calibration_options": [None, {}], "excluded_ops": [(), "MatMul", ["Conv2D"]], "excluded_nodes": [(), "nope"],
    "batch_size": [1, 8, np.int64(64)], "max_batches": [None, 1, 2], "max_accuracy_drop": [0.0, 0.01, 1],
    "eval_fn": [None, lambda predict: 0.5, lambda predict: float(np.mean(predict(samples(4)))), lambda predict: None],
    "relative": [True, False], "max_trials": [1, 2], "fallback": ["fp32", "bf16"], "kernels": ["onednn", "public"],
    "stem": ["fp32", "int8"], "inputs": [None, ["x"], "x"], "outputs": [None], "input_shapes": [None, (None, 8, 8, 2)],
    "signature": [None], "progress": [False], "safe_mode": [True, False],
}
CALIBRATION_DATA = [lambda: samples(8), lambda: samples(8)[:0], lambda: [samples(4)], lambda: {"x": samples(4)},
                    lambda: "calib.npy", lambda: None, lambda: iter([]), lambda: tf.constant(samples(4)),
                    lambda: samples(8).astype(np.float16), lambda: (samples(4), np.zeros(4)), lambda: 7,
                    lambda: [samples(4), samples(4)], lambda: samples(4)[..., :1]]
CASE_SECONDS = 60


def arguments(data, valid: dict) -> dict:
    """Some of ``valid``'s parameters, each a valid value or (about one in four) a hostile one."""
    drawn = {}
    for name in data.draw(st.lists(st.sampled_from(sorted(valid)), max_size=5, unique=True), label="parameters"):
        pool = valid[name] if data.draw(st.integers(0, 3), label=f"{name} hostile?") else HOSTILE_VALUES
        drawn[name] = data.draw(st.sampled_from(pool), label=name)
    return drawn


API_FUZZ = settings(max_examples=100, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


@API_FUZZ
@given(data=st.data())
def test_quantize_parameters(small_frozen, data):
    calibration_data = data.draw(st.sampled_from(CALIBRATION_DATA), label="calibration data")()
    kwargs = arguments(data, VALID_QUANTIZE_VALUES)
    kwargs.setdefault("progress", False)
    with within(CASE_SECONDS), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qmodel = kquant_error_or(lambda: kquant.quantize(small_frozen, calibration_data, **kwargs))
    assert qmodel is None or isinstance(qmodel, kquant.QuantizedModel)


VALID_FREEZE_VALUES = {"signature": [None], "outputs": [None, "output_0", ["output_0"], "nope"],
                       "input_shapes": [None, (None, 8, 8, 2), {"x": (None, 8, 8, 2)}, (None, 5), [[None, 8, 8, 2]]],
                       "checkpoint": [None], "custom_objects": [None], "safe_mode": [True, False]}


@API_FUZZ
@given(data=st.data())
def test_freeze_and_summarize_parameters(small_cnn, small_files, data):
    model = data.draw(st.sampled_from([small_cnn, small_files["pb"], str(small_files["pbtxt"]), small_files["calib"],
                                       None, 3, "", "/dev/null", "/nonexistent/m.keras"]), label="model")
    kwargs = arguments(data, VALID_FREEZE_VALUES)
    with within(CASE_SECONDS), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frozen = kquant_error_or(lambda: kquant.freeze(model, **kwargs))
        summary = kquant_error_or(lambda: kquant.summarize_graph(frozen if data.draw(st.booleans()) else model))
    assert frozen is None or isinstance(frozen, kquant.FrozenGraph)
    assert summary is None or summary.node_count > 0


VALID_TRANSFORM_VALUES = {"inputs": [None, "x", ["x"]], "outputs": [None, "output_0", ["output_0"]],
                          "transforms": ["fold_constants", ["strip_unused_nodes", "sort_by_execution_order"], "",
                                         "fold_keras_batch_norms(ignore_errors=true)"],
                          "file_name": ["t.pb", "t.pbtxt", "t.keras"]}


@API_FUZZ
@given(data=st.data())
def test_transform_graph_parameters(small_files, data):
    kwargs = {"inputs": None, "outputs": None, "transforms": "fold_constants", "file_name": "t.pb",
              **arguments(data, VALID_TRANSFORM_VALUES)}
    with tempfile.TemporaryDirectory() as directory, within(CASE_SECONDS):
        path = kquant_error_or(lambda: kquant.transform_graph(small_files["pb"], directory, **kwargs))
        assert path is None or Path(path).stat().st_size > 0
        left = sorted(p.name for p in Path(directory).iterdir())
    assert left == ([] if path is None else [Path(path).name])


VALID_BENCHMARK_VALUES = {"batches": [(1,), 2, [1, 3]], "runs": [1, 2], "progress": [False],
                          "data": [None, samples(3)], "labels": [None, np.zeros(3, np.int64)], "safe_mode": [True]}


@settings(max_examples=25, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_benchmark_parameters(small_frozen, data):
    kwargs = {"runs": 1, "batches": (1,), "progress": False, **arguments(data, VALID_BENCHMARK_VALUES)}
    if kwargs["runs"] == 10**12:
        kwargs["runs"] = 1  # a valid value that only takes forever
    with within(CASE_SECONDS), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = kquant_error_or(lambda: kquant.benchmark(small_frozen, **kwargs))
    assert report is None or "fp32" in report.variants
