"""QuantizedModel: the int8 graph kquant built, ready to run, save as .pb, export (a SavedModel, the portable QDQ
graph, an OpenVINO IR), or report on."""

from __future__ import annotations

import collections
import shutil
import tempfile
from pathlib import Path

import tensorflow as tf

from kquant.errors import ConfigurationError, OutputWriteError, QuantizationError, first_line
from kquant.graph import (GRAPH_SUFFIXES, FrozenGraph, atomic_write, make_parents, remove_created, save_graph_def,
                          without_default_attrs)
from kquant.outputs import AllOrNothing
from kquant.quantization.pipeline import QuantizationResult
from kquant.quantization.qdq import QdqPoints, export_points
from kquant.runtime import Predictor
from kquant.summarize import summarize_graph

INT8_OP_PREFIXES = ("Quantize", "Dequantize", "_FusedQuantized", "_Quantized")
EXPORT_FORMATS = ("saved_model", "qdq", "openvino")


class QuantizedModel:
    """An int8 graph ready to run, save as .pb, or export for a runtime (``export``).

    ``graph_def`` is always the TF int8 graph; ``predict`` runs on the target the model was quantized for: that graph
    in TF, or (``target="openvino"``) its OpenVINO export form, compiled once.
    """

    def __init__(self, result: QuantizationResult):
        self.result = result
        self._lowered = result.openvino  # the OpenVINO form (openvino.Lowered): tuning's, else built by the first use
        if result.target == "openvino":
            from kquant.quantization.openvino import OpenVinoRunner

            self._predictor = Predictor(result.fp32,
                                        runner=lambda: OpenVinoRunner(self.openvino_model(), result.fp32.inputs))
        else:
            self._predictor = Predictor(result.int8)
        self.openvino_precisions: dict[str, str] = {}  # after an OpenVINO export: int8 unit -> its runtime precision

    @property
    def target(self) -> str:
        return self.result.target

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
        """Run the model on ``x`` (same forms as calibration data) on its target; one array per output."""
        return self._predictor(x, batch_size)

    def save(self, path) -> Path:
        """Write the int8 GraphDef (.pb binary, .pbtxt text) without default-valued attributes, atomically."""
        return save_graph_def(without_default_attrs(self.graph_def), path)

    def export(self, path, format: str = "saved_model") -> Path:
        """Write the model for a runtime, atomically and all or nothing:

        - "saved_model": the int8 graph as a SavedModel directory with a ``serving_default`` signature (TF Serving);
        - "qdq": the fp32 graph with FakeQuant wherever the int8 graph rounds and on its weights (per channel, narrow
          range, the int8 graph's scales), the interchange OpenVINO, TFLite's converter and tf2onnx read: a GraphDef
          when ``path`` ends in .pb/.pbtxt, else a SavedModel directory;
        - "openvino": the QDQ graph as an OpenVINO IR, ``path`` (.xml) and the .bin beside it; then compiled for CPU,
          warning about any int8 convolution or matmul OpenVINO does not run in int8 (``openvino_precisions``).
        """
        if format not in EXPORT_FORMATS:
            raise ConfigurationError(f"format={format!r} is not an export format; choose one of {', '.join(EXPORT_FORMATS)}")
        if format == "saved_model":
            return _write_saved_model(self.graph, path)
        if format == "openvino":
            return self._export_openvino(Path(path))
        graph = FrozenGraph(self.qdq_points().graph_def(), self.result.fp32.inputs, self.result.fp32.outputs)
        if Path(path).suffix.lower() in GRAPH_SUFFIXES:
            return save_graph_def(graph.graph_def, path)
        return _write_saved_model(graph, path)

    def qdq_points(self) -> QdqPoints:
        """The QDQ export lowering of this model's plan: the emitted units, their ranges, weights behind FakeQuant
        with the scales the int8 kernels use (pair-safe where the int8 graph's are)."""
        result = self.result
        return export_points(result.fp32, result.units, result.ranges, result.options)

    def openvino_model(self):
        """The ``ov.Model`` of this plan (the QDQ export graph through OpenVINO's converter), converted once: what
        ``predict`` runs for ``target="openvino"`` and ``export(format="openvino")`` writes."""
        return self._openvino().model

    def _openvino(self):
        if self._lowered is None:
            from kquant.quantization.openvino import lower

            result = self.result
            self._lowered = lower(result.fp32, result.units, result.ranges, result.options)
        return self._lowered

    def _export_openvino(self, path: Path) -> Path:
        from kquant.quantization import openvino as kov

        if path.suffix.lower() != ".xml":
            raise OutputWriteError(f"{path}: an OpenVINO IR is written as a .xml file (and the .bin beside it); "
                                   "name the output .xml")
        ov = kov.import_openvino()
        lowered = self._openvino()
        created = make_parents(path.parent)
        try:
            with tempfile.TemporaryDirectory(prefix="kquant-openvino-") as staging:
                staged = Path(staging) / "model.xml"
                ov.save_model(lowered.model, str(staged), compress_to_fp16=False)
                with AllOrNothing() as outputs:
                    outputs.write(path.with_suffix(".bin"), lambda target: _copy(staged.with_suffix(".bin"), target))
                    outputs.write(path, lambda target: _copy(staged, target))
        except BaseException:
            remove_created(created)
            raise
        self.openvino_precisions = kov.runtime_precisions(lowered.model, list(lowered.anchors))  # what was written
        kov.warn_unless_int8(self.openvino_precisions, self.result.layers)
        return path

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


def _write_saved_model(graph: FrozenGraph, directory) -> Path:
    """``graph`` as a SavedModel with a ``serving_default`` signature (what TF Serving deploys), atomically."""
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
        module = _ServingModule(graph)
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


def _copy(source: Path, target: Path) -> None:
    with atomic_write(target) as tmp:
        shutil.copyfile(source, tmp)


class _ServingModule(tf.Module):
    """A tf.Module calling a frozen GraphDef (the int8 or the QDQ graph), so tf.saved_model can store it."""

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
