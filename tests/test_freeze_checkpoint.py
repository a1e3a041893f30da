"""freeze() of TF1 graphs (.pb/.pbtxt written by tf.io.write_graph) plus a tf.compat.v1.train.Saver checkpoint."""

import numpy as np
import pytest
import tensorflow as tf

import kquant
from kquant.errors import ModelFormatError, ModelInputError, ModelNotFoundError, NodeNotFoundError
from kquant.summarize import VARIABLE_OPS
from tests.conftest import run_frozen


def check_cases(frozen, tf1_graph) -> None:
    """``frozen`` (outputs y, z) reproduces the original session's outputs for every recorded batch."""
    for inputs, expected in tf1_graph.cases:
        got = run_frozen(frozen, inputs)
        assert [g.shape for g in got] == [e.shape for e in expected]
        assert max(np.abs(g - e).max() for g, e in zip(got, expected)) <= 1e-5


@pytest.mark.parametrize("suffix", ["pb", "pbtxt"])
def test_graph_and_checkpoint_match_the_session(tf1_graph, suffix):
    frozen = kquant.freeze(getattr(tf1_graph, suffix), checkpoint=tf1_graph.checkpoint, outputs=["y", "z"])
    assert not [n.name for n in frozen.graph_def.node if n.op in VARIABLE_OPS or n.op == "ReadVariableOp"]
    assert frozen.input_names == ["x:0"] and frozen.inputs[0].shape == (None, 4)
    assert frozen.output_names == ["y:0", "z:0"]
    check_cases(frozen, tf1_graph)


def test_in_memory_graph_def_with_checkpoint(tf1_graph):
    graph_def = kquant.load_graph_def(tf1_graph.pb)
    check_cases(kquant.freeze(graph_def, checkpoint=tf1_graph.checkpoint, outputs=["y", "z"]), tf1_graph)


@pytest.mark.parametrize("form", ["index_file", "directory"])
def test_checkpoint_may_be_named_by_its_index_file_or_directory(tf1_graph, form):
    checkpoint = tf1_graph.checkpoint + ".index" if form == "index_file" else str(tf1_graph.pb.parent)
    check_cases(kquant.freeze(tf1_graph.pb, checkpoint=checkpoint, outputs=["y", "z"]), tf1_graph)


def test_checkpoint_needs_output_names(tf1_graph):
    with pytest.raises(ModelInputError, match="output node names"):
        kquant.freeze(tf1_graph.pb, checkpoint=tf1_graph.checkpoint)


def test_graph_with_variables_but_no_checkpoint(tf1_graph):
    with pytest.raises(ModelFormatError, match="still holds variables .*pass its checkpoint"):
        kquant.freeze(tf1_graph.pb, outputs=["z"])


def test_unknown_output_node(tf1_graph):
    with pytest.raises(NodeNotFoundError, match="unknown output node.*nope"):
        kquant.freeze(tf1_graph.pb, checkpoint=tf1_graph.checkpoint, outputs=["z", "nope"])


def test_missing_checkpoint(tf1_graph, tmp_path):
    with pytest.raises(ModelNotFoundError, match="checkpoint .* does not exist"):
        kquant.freeze(tf1_graph.pb, checkpoint=str(tmp_path / "model.ckpt"), outputs=["z"])


def test_checkpoint_of_another_model(tf1_graph, tmp_path):
    other = tf.train.Checkpoint(v=tf.Variable([1.0, 2.0])).write(str(tmp_path / "other"))
    with pytest.raises(ModelFormatError, match="variable w is not in the checkpoint"):
        kquant.freeze(tf1_graph.pb, checkpoint=other, outputs=["z"])


def save_tf1_graph(build, tmp_path, use_resource):
    """Build a TF1 graph with ``build(use_resource) -> (placeholder, output, feed)`` and save its checkpoint.

    Returns the GraphDef, the checkpoint prefix, the feed and the session's output for it.
    """
    tf1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        tf1.set_random_seed(5)
        placeholder, output, feed = build(use_resource)
        with tf1.Session() as session:
            session.run(tf1.global_variables_initializer())
            expected = session.run(output, {placeholder: feed})
            checkpoint = tf1.train.Saver().save(session, str(tmp_path / "model.ckpt"))
    return graph.as_graph_def(), checkpoint, feed, expected


@pytest.mark.parametrize("use_resource", [False, True], ids=["ref_variables", "resource_variables"])
def test_embedding_lookup_is_frozen_to_a_gather(use_resource, tmp_path):
    def build(use_resource):
        ids = tf.compat.v1.placeholder(tf.int32, [None, 3], name="ids")
        table = tf.compat.v1.get_variable("table", [10, 4], use_resource=use_resource)
        pooled = tf.reduce_sum(tf.nn.embedding_lookup(table, ids), axis=1, name="pooled")
        return ids, pooled, np.array([[1, 2, 3], [9, 0, 9]], np.int32)

    graph_def, checkpoint, feed, expected = save_tf1_graph(build, tmp_path, use_resource)
    frozen = kquant.freeze(graph_def, checkpoint=checkpoint, outputs=["pooled"])
    assert "ResourceGather" not in {node.op for node in frozen.graph_def.node}
    (got,) = run_frozen(frozen, feed)
    assert np.abs(got - expected).max() <= 1e-5


def test_unsupported_resource_use_is_a_format_error(tmp_path):
    def build(use_resource):
        ids = tf.compat.v1.placeholder(tf.int32, [None, 1], name="ids")
        table = tf.compat.v1.get_variable("table", [10, 4], use_resource=use_resource)
        rows = tf.raw_ops.ResourceGatherNd(resource=table.handle, indices=ids, dtype=tf.float32, name="rows")
        return ids, rows, np.array([[1]], np.int32)

    graph_def, checkpoint, _, _ = save_tf1_graph(build, tmp_path, use_resource=True)
    with pytest.raises(ModelFormatError, match=r"node rows \(ResourceGatherNd\) uses variable table .*convert_variables_to_constants"):
        kquant.freeze(graph_def, checkpoint=checkpoint, outputs=["rows"])
