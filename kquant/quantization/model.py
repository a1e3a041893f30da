"""QuantizedModel: the int8 graph kquant built, ready to run, save as .pb, export as a SavedModel, or report on."""

from __future__ import annotations

import collections
import shutil
import tempfile
from pathlib import Path

import tensorflow as tf

from kquant.errors import OutputWriteError, QuantizationError, first_line
from kquant.graph import FrozenGraph, make_parents, remove_created, save_graph_def, without_default_attrs
from kquant.quantization.pipeline import QuantizationResult
from kquant.runtime import Predictor
from kquant.summarize import summarize_graph

INT8_OP_PREFIXES = ("Quantize", "Dequantize", "_FusedQuantized", "_Quantized")


class QuantizedModel:
    """An int8 graph ready to run, save as .pb, or export as a SavedModel."""

    def __init__(self, result: QuantizationResult):
        self.result = result
        self._predictor = Predictor(result.int8)

    @property
    def graph(self) -> FrozenGraph:
        return self.result.int8

    @property
    def graph_def(self):
        return self.result.int8.graph_def

    @property
    def inputs(self):
        return self.result.int8.inputs

    @property
    def outputs(self):
        return self.result.int8.outputs

    def predict(self, x, batch_size: int = 256):
        """Run the int8 graph on ``x`` (same forms as calibration data); one array per output."""
        return self._predictor(x, batch_size)

    def save(self, path) -> Path:
        """Write the int8 GraphDef (.pb binary, .pbtxt text) without default-valued attributes, atomically."""
        return save_graph_def(without_default_attrs(self.graph_def), path)

    def export(self, directory) -> Path:
        """Write a SavedModel with a ``serving_default`` signature (what TF Serving deploys), atomically."""
        directory = Path(directory)
        if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
            raise OutputWriteError(f"{directory} exists and is not an empty directory; choose a new directory for the SavedModel")
        created = make_parents(directory.parent)
        try:
            staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        except OSError as exc:
            remove_created(created)
            raise OutputWriteError(f"cannot write in {directory.parent} ({exc.strerror or exc}); choose a writable directory") from exc
        try:
            module = _ServingModule(self.graph)
            tf.saved_model.save(module, str(staging), signatures={"serving_default": module.serve})
            if directory.exists():
                directory.rmdir()
            staging.rename(directory)
        except BaseException as exc:
            shutil.rmtree(staging, ignore_errors=True)
            remove_created(created)
            if isinstance(exc, (OSError, tf.errors.OpError)):
                raise OutputWriteError(f"writing the SavedModel {directory} failed ({first_line(exc)}); nothing was left "
                                       "behind: free disk space or choose another directory") from exc
            raise
        return directory

    @property
    def trials(self) -> list:
        """The accuracy-aware tuning log (empty without ``eval_fn``)."""
        return self.result.trials

    def report(self):
        """Per-layer table: range, output SNR and relative error against fp32 on calibration data, and whether
        the unit was kept fp32 (by tuning, or as the image stem)."""
        from kquant.quantization.report import layer_report

        result = self.result
        if result.sample is None:
            raise QuantizationError("no calibration batch was kept (ranges came from a log); the report needs one")
        kept_out = set(result.fell_back) | set(result.stems)
        kept = [u for u in result.prepared.planned if u.anchor in kept_out]
        order = {node.name: i for i, node in enumerate(result.fp32.graph_def.node)}
        candidates = sorted(list(result.units) + kept, key=lambda u: order[u.output])
        graph, _ = result.prepared.build(result.ranges, result.options, fell_back=result.fell_back,
                                         fallback=result.fallback, extra_outputs=[u.output_tensor for u in candidates])
        return layer_report(result.fp32, graph.graph_def, candidates, kept_out, result.ranges, result.sample, result.layers)

    def stem_layers(self) -> list[str]:
        """The layers of the image stems kept fp32, named as the per-layer report names them."""
        return [self.result.layers.get(anchor, anchor) for anchor in self.result.stems]

    def op_counts(self) -> dict:
        return dict(collections.Counter(n.op for n in self.graph_def.node))

    def summary(self) -> str:
        counts = self.op_counts()
        int8 = {op: n for op, n in counts.items() if op.startswith(INT8_OP_PREFIXES)}
        kinds = collections.Counter(u.family for u in self.result.units)
        lines = [
            f"int8 units: {sum(kinds.values())} (" + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) + ")",
            "int8 ops: " + ", ".join(f"{n} {op}" for op, n in sorted(int8.items())),
            *([f"fp32 image stem: {', '.join(self.stem_layers())}"] if self.result.stems else []),
            str(summarize_graph(self.graph_def)),
        ]
        return "\n".join(lines)


class _ServingModule(tf.Module):
    """A tf.Module calling the int8 GraphDef, so tf.saved_model can store it."""

    def __init__(self, graph: FrozenGraph):
        super().__init__()
        self._graph = graph
        wrapped = tf.compat.v1.wrap_function(self._import, [])
        self._function = wrapped.prune(
            [wrapped.graph.get_tensor_by_name(n) for n in graph.input_names],
            [wrapped.graph.get_tensor_by_name(n) for n in graph.output_names],
        )
        specs = [tf.TensorSpec(spec.shape, spec.dtype, name=spec.node) for spec in graph.inputs]
        self.serve = tf.function(self._call, input_signature=specs)

    def _import(self):
        tf.graph_util.import_graph_def(self._graph.graph_def, name="")

    def _call(self, *args):
        values = self._function(*args)
        return {spec.node: value for spec, value in zip(self._graph.outputs, values)}
