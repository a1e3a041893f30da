"""summarize_graph(): likely inputs and outputs, op histogram and parameter counts, as text and as fields."""

import numpy as np
import pytest
import tensorflow as tf

import kquant
from kquant.errors import ConfigurationError, ModelNotFoundError
from tests.conftest import build_dense_model

INPUT_LINE = "Found 1 possible inputs: (name=image, type=float(1), shape=[?,28,28,1])"
OUTPUT_LINE = "Found 1 possible outputs: (name=probs, op=Identity)"


@pytest.fixture(scope="module", params=["pb", "pbtxt", "graph_def", "frozen_graph"])
def conv_source(request, conv_pb, tmp_path_factory):
    """The frozen conv model as each thing summarize_graph takes."""
    frozen = kquant.freeze(conv_pb)
    return {
        "pb": conv_pb,
        "pbtxt": frozen.save(tmp_path_factory.mktemp("summarize") / "conv.pbtxt"),
        "graph_def": frozen.graph_def,
        "frozen_graph": frozen,
    }[request.param]


def test_input_and_output_lines(conv_source):
    lines = str(kquant.summarize_graph(conv_source)).splitlines()
    assert lines[0] == INPUT_LINE
    assert lines[1] == OUTPUT_LINE


def test_op_histogram(conv_source):
    summary = kquant.summarize_graph(conv_source)
    assert {op: summary.op_counts.get(op) for op in ("Placeholder", "Conv2D", "MatMul", "Softmax")} == {
        "Placeholder": 1, "Conv2D": 1, "MatMul": 1, "Softmax": 1}
    assert sum(summary.op_counts.values()) == summary.node_count
    ops_line = str(summary).splitlines()[3]
    assert ops_line.startswith(f"Op types used ({summary.node_count} nodes): ")
    counts = [int(entry.split()[0]) for entry in ops_line.split(": ", 1)[1].split(", ")]
    assert counts == sorted(counts, reverse=True)
    assert "1 Conv2D" in ops_line


def test_summaries_agree_across_sources(conv_pb, tmp_path):
    frozen = kquant.freeze(conv_pb)
    expected = kquant.summarize_graph(conv_pb)
    for source in (frozen.save(tmp_path / "conv.pbtxt"), frozen.graph_def, frozen):
        assert kquant.summarize_graph(source) == expected


@pytest.mark.parametrize("module", ["keras3", "tf_keras"])
def test_const_parameters_are_the_weights(request, module):
    model = build_dense_model(request.getfixturevalue(module))
    weights = sum(w.size for w in model.get_weights())  # 6*5 + 5 + 5*3 + 3 = 53
    summary = kquant.summarize_graph(kquant.freeze(model))
    assert (summary.const_parameters, summary.const_bytes) == (weights, 4 * weights)
    assert f"Found {weights} ({weights}) const parameters ({4 * weights}B)" in str(summary)


def test_const_parameters_of_a_conv_model_cover_its_weights(conv_model, conv_pb):
    weights = sum(w.size for w in conv_model.get_weights())
    summary = kquant.summarize_graph(conv_pb)
    assert weights <= summary.const_parameters <= weights + 16  # plus a few int32 shape constants
    assert 4 * weights <= summary.const_bytes <= 4 * weights + 64
    assert f"Found {summary.const_parameters} ({summary.const_parameters / 1e3:.2f}k) const parameters" in str(summary)


def test_variable_parameters_of_an_unfrozen_graph(tf1_graph):
    summary = kquant.summarize_graph(tf1_graph.pb)
    assert summary.variable_parameters == 4 * 3 + 3
    assert str(summary.inputs[0]) == "(name=x, type=float(1), shape=[?,4])"


def test_hand_built_graph_dtypes_unknown_shapes_and_control_edges():
    graph = tf.Graph()
    with graph.as_default():
        ids = tf.compat.v1.placeholder(tf.int32, None, name="ids")
        scale = tf.constant(np.ones((2, 3), np.float32), name="scale")
        with tf.control_dependencies([tf.no_op(name="barrier")]):
            tf.identity(tf.cast(ids, tf.float32) * scale, name="scaled")
    summary = kquant.summarize_graph(graph.as_graph_def())
    lines = str(summary).splitlines()
    assert lines[0] == "Found 1 possible inputs: (name=ids, type=int32(3), shape=<unknown>)"
    assert lines[1] == "Found 1 possible outputs: (name=scaled, op=Identity)"
    assert (summary.const_parameters, summary.control_edges) == (6, 1)


def test_graph_without_placeholders_reports_no_inputs():
    graph = tf.Graph()
    with graph.as_default():
        tf.add(tf.constant(1.0), tf.constant(2.0), name="sum")
    assert str(kquant.summarize_graph(graph.as_graph_def())).splitlines()[0] == "No inputs spotted."


def test_missing_file_and_wrong_type(tmp_path):
    with pytest.raises(ModelNotFoundError):
        kquant.summarize_graph(tmp_path / "missing.pb")
    with pytest.raises(ConfigurationError, match="path_or_graph=.* is not valid"):
        kquant.summarize_graph([])
