"""Run a GraphDef: one prepared session callable per graph, and the oneDNN check the int8 kernels need."""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from kquant.errors import GraphRunError, ModelFormatError, ModelInputError, OneDNNDisabledError, first_line


def onednn_enabled() -> bool:
    """Whether this TensorFlow process runs with oneDNN (read once by TensorFlow at start-up)."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


def ensure_onednn() -> None:
    """Raise OneDNNDisabledError unless oneDNN is on: without it every fused int8 op fails or returns nothing."""
    if onednn_enabled():
        return
    from kquant._startup import TENSORFLOW_IMPORTED_FIRST

    setting = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    if TENSORFLOW_IMPORTED_FIRST and setting == "1":
        cause = "TensorFlow (or Keras) was imported before kquant, and this CPU does not turn oneDNN on by default"
    else:
        cause = f"TF_ENABLE_ONEDNN_OPTS={setting}"
    raise OneDNNDisabledError(
        f"oneDNN is disabled in this process ({cause}), so TensorFlow's int8 kernels cannot run; "
        "set TF_ENABLE_ONEDNN_OPTS=1 in the environment before Python starts (or import kquant before tensorflow)"
    )


def session_config(threads: int | None = None, *, optimize: bool = True) -> tf.compat.v1.ConfigProto:
    """``optimize=False`` turns grappler off: its passes copy the graph's constants several times over."""
    threads = threads or os.cpu_count() or 1
    config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=threads, inter_op_parallelism_threads=1)
    config.graph_options.rewrite_options.disable_meta_optimizer = not optimize
    return config


class GraphRunner:
    """A GraphDef imported once into its own session, called through a prepared callable.

    ``runner(*arrays)`` feeds ``inputs`` in order and returns the ``outputs`` as numpy arrays. ``optimize=False``
    runs the graph as it is, without grappler (``session_config``): for a few runs that fetch many tensors.
    """

    def __init__(self, graph_def, inputs, outputs, *, threads: int | None = None, optimize: bool = True):
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.graph = tf.Graph()
        try:
            with self.graph.as_default():
                tf.graph_util.import_graph_def(_copy(graph_def), name="")  # import adds default attrs in place
            feeds = [self.graph.get_tensor_by_name(n) for n in self.inputs]
            fetches = [self.graph.get_tensor_by_name(n) for n in self.outputs]
        except (ValueError, KeyError, TypeError, tf.errors.OpError) as exc:
            raise ModelFormatError(f"the graph does not import into TensorFlow ({first_line(exc)})") from exc
        self.session = tf.compat.v1.Session(graph=self.graph, config=session_config(threads, optimize=optimize))
        self._call = self.session.make_callable(fetches, feed_list=feeds)

    def __call__(self, *arrays) -> list[np.ndarray]:
        try:
            return list(self._call(*arrays))
        except tf.errors.OpError as exc:
            node = f" at node {exc.node_def.name}" if exc.node_def is not None and exc.node_def.name else ""
            raise GraphRunError(
                f"TensorFlow failed running the graph{node} ({_op_error_text(exc)}); check that the data fits the "
                "model's inputs (shape, dtype, values) and that the graph runs in TensorFlow"
            ) from exc

    def close(self) -> None:
        self.session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Predictor:
    """``predict(x)`` for a FrozenGraph: any input form kquant accepts, run in batches, one array per output.

    ``runner``: a function giving what runs one batch (arrays in the order of ``graph.inputs`` -> a list in the order
    of ``graph.outputs``, with ``close()``), built at the first call; default: ``graph`` in a TF session (GraphRunner).
    """

    def __init__(self, graph, batch_size: int = 256, runner=None):
        self.graph = graph
        self.batch_size = batch_size
        self._make_runner = runner or (lambda: GraphRunner(graph.graph_def, graph.input_names, graph.output_names))
        self._runner = None

    def __call__(self, x, batch_size: int | None = None):
        from kquant.data import iter_batches

        if self._runner is None:
            self._runner = self._make_runner()
        size = batch_size or self.batch_size
        chunks, rows = [], []
        for batch in iter_batches(x, self.graph.inputs, size, role="prediction input"):
            chunks.append(self._runner(*batch))
            rows.append(len(batch[0]) if batch and np.ndim(batch[0]) else None)
        results = [joined_chunks([c[i] for c in chunks], rows, spec.name, size) for i, spec in enumerate(self.graph.outputs)]
        return results[0] if len(results) == 1 else results

    def close(self) -> None:
        if self._runner is not None:
            self._runner.close()
            self._runner = None


def joined_chunks(parts, rows, output: str, size: int) -> np.ndarray:
    """One output's chunks glued along the batch; an output that does not follow the batch (a scalar, a mean over
    axis 0) cannot be glued, so it is returned as is for one chunk and refused for several."""
    if len(parts) == 1:
        return parts[0]
    if any(np.ndim(part) == 0 or len(part) != count for part, count in zip(parts, rows)):
        total = sum(r or 0 for r in rows)
        raise ModelInputError(
            f"output {output} has shape {np.shape(parts[0])} for a batch of {rows[0]} rows: it does not follow the "
            f"batch (it is computed across the rows, e.g. a mean over axis 0), so the {total} rows cannot be run in "
            f"chunks of {size}; pass them in one call with batch_size={total}")
    return np.concatenate(parts)


def _copy(graph_def):
    copy = type(graph_def)()
    copy.CopyFrom(graph_def)
    return copy


_OP_ERROR_FRAMING = ("Graph execution error", "Detected at node", "Node:", "[[")


def _op_error_text(exc: tf.errors.OpError) -> str:
    """The line of a TensorFlow run error that says what went wrong, without its framing lines."""
    lines = [line.strip() for line in exc.message.splitlines() if line.strip()]
    return next((line for line in lines if not line.startswith(_OP_ERROR_FRAMING)), first_line(exc))[:300]
