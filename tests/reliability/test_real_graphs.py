"""Real graphs that broke kquant (../shared/fixtures): they quantize and run, and never bring the process down."""

import gzip
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from tensorflow.core.framework import graph_pb2
from tensorflow.python.framework import tensor_util

import kquant
from kquant.graphdef import const_value, node_name, nodes_by_name
from kquant.transforms import optimize_for_inference

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures"
MOBILENET = FIXTURES / "mobilenet_v2_dense_head.pb.gz"
REPO = Path(__file__).resolve().parents[2]


def mobilenet_v2_graph_def():
    """The fixture with its stand-in batch-norm variances made positive, so that the model computes numbers, not NaN."""
    graph_def = graph_pb2.GraphDef()
    graph_def.ParseFromString(gzip.decompress(MOBILENET.read_bytes()))
    nodes = nodes_by_name(graph_def)
    for node in graph_def.node:
        if node.op.startswith("FusedBatchNorm"):
            variance = nodes[node_name(node.input[4])]
            while variance.op == "Identity":
                variance = nodes[node_name(variance.input[0])]
            value = const_value(variance)
            variance.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(np.abs(value) + 1e-3))
    return graph_def


def run_child(code: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh Python, so that a TensorFlow abort fails the test instead of killing pytest."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**__import__("os").environ, "PYTHONPATH": str(REPO)})


@pytest.mark.skipif(not MOBILENET.exists(), reason="../shared/fixtures is not there")
def test_mobilenet_v2_fp32_graph_keeps_pads_before_public_depthwise_convs():
    fp32 = optimize_for_inference(kquant.freeze(mobilenet_v2_graph_def()))
    depthwise = [n for n in fp32.graph_def.node if n.op == "DepthwiseConv2dNative"]
    assert len(depthwise) == 17
    assert all(n.attr["padding"].s != b"EXPLICIT" for n in depthwise)


@pytest.mark.skipif(not MOBILENET.exists(), reason="../shared/fixtures is not there")
def test_mobilenet_v2_quantizes_and_runs(tmp_path):
    """It aborted TensorFlow (a CHECK in DepthwiseConv2DNativeShapeImpl) in the first calibration run."""
    result = run_child(f"""
        import numpy as np, kquant
        from tests.reliability.test_real_graphs import mobilenet_v2_graph_def
        x = np.random.default_rng(0).random((4, 224, 224, 3), dtype=np.float32)
        q = kquant.quantize(mobilenet_v2_graph_def(), x, batch_size=4, progress=False)
        counts = q.op_counts()
        y = q.predict(x)
        print("RESULT", counts.get("_FusedQuantizedDepthwiseConv2D", 0), counts.get("Pad", 0), y.shape, bool(np.isfinite(y).all()))
    """)
    assert result.returncode == 0, result.stderr[-2000:]
    depthwise, pads, *_, finite = result.stdout.split("RESULT")[-1].split()
    assert (int(depthwise), int(pads), finite) == (17, 0, "True")


def with_explicit_depthwise_padding(graph_def):
    """The form kquant made before: each Pad before a DepthwiseConv2dNative folded into padding="EXPLICIT"."""
    nodes = nodes_by_name(graph_def)
    for node in graph_def.node:
        source = nodes.get(node.input[0]) if node.op == "DepthwiseConv2dNative" else None
        if source is not None and source.op == "Pad":
            paddings = const_value(nodes[source.input[1]])
            node.input[0] = source.input[0]
            node.attr["padding"].s = b"EXPLICIT"
            node.attr["explicit_paddings"].list.i[:] = [int(v) for v in paddings.reshape(-1)]
    return graph_def


@pytest.mark.skipif(not MOBILENET.exists(), reason="../shared/fixtures is not there")
def test_a_graph_that_aborts_tensorflow_raises_graph_run_error_and_the_process_lives_on():
    """Grappler's memory optimizer aborts on a public depthwise conv with explicit padding when many tensors are
    fetched: the pre-flight child dies instead of this process. Calibration runs without grappler, so it does not."""
    result = run_child("""
        import numpy as np, kquant
        from kquant.errors import GraphRunError
        from kquant.preflight import preflight
        from kquant.quantization.collect import collect_ranges
        from kquant.quantization.plan import find_units, tensors_to_calibrate
        from kquant.transforms import optimize_for_inference
        from tests.reliability.test_real_graphs import mobilenet_v2_graph_def, with_explicit_depthwise_padding
        fp32 = optimize_for_inference(kquant.freeze(mobilenet_v2_graph_def()))
        graph_def = with_explicit_depthwise_padding(fp32.graph_def)
        tensors = tensors_to_calibrate(find_units(graph_def))
        x = np.random.default_rng(0).random((4, 224, 224, 3), dtype=np.float32)
        print("CALIBRATED", len(collect_ranges(graph_def, fp32.input_names, tensors, [[x]], progress=False)))
        try:
            preflight(graph_def, fp32.input_names, tensors, [x], "the graph with grappler")
        except GraphRunError as exc:
            print("RAISED", exc)
    """)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "CALIBRATED " in result.stdout and "CALIBRATED 0" not in result.stdout
    assert "RAISED TensorFlow aborted the process running the graph with grappler (SIGABRT: Check failed" in result.stdout


def test_the_preflight_child_ends_after_a_big_graph(monkeypatch):
    """It stays for the next graph, unless the one it ran was big: then it ends and gives its memory back."""
    import tensorflow as tf

    import kquant.preflight as preflight

    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, (None, 4), name="x")
        tf.identity(x * 2.0, name="y")
    run = lambda: preflight.preflight(graph.as_graph_def(), ["x:0"], ["y:0"], [np.ones((2, 4), np.float32)])
    run()
    assert preflight._Child.process is not None and preflight._Child.process.poll() is None
    monkeypatch.setattr(preflight, "KEEP_CHILD_BELOW", 0)
    run()
    assert preflight._Child.process is None


def test_preflight_can_be_turned_off(monkeypatch):
    import kquant.preflight

    monkeypatch.setattr(kquant.preflight.subprocess, "run", lambda *a, **k: pytest.fail("a child process ran"))
    monkeypatch.setenv("KQUANT_PREFLIGHT", "0")
    kquant.preflight.preflight(None, [], [], [], "a graph")
