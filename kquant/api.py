"""kquant.quantize(model, calibration_data) and the QuantizedModel it returns."""

from __future__ import annotations

import collections
import shutil
import tempfile
from pathlib import Path

import tensorflow as tf

from kquant.arguments import check_bool, check_callable, names_list
from kquant.converters import freeze
from kquant.data import DEFAULT_BATCH_SIZE, check_calibration_data
from kquant.errors import OutputWriteError, QuantizationError, first_line
from kquant.graph import FrozenGraph, make_parents, remove_created, save_graph_def, without_default_attrs
from kquant.quantization.config import QuantizationConfig
from kquant.quantization.pipeline import QuantizationResult, quantize_frozen
from kquant.runtime import Predictor
from kquant.summarize import summarize_graph

INT8_OP_PREFIXES = ("Quantize", "Dequantize", "_FusedQuantized", "_Quantized")

def quantize(model, calibration_data, *, inputs=None, outputs=None, per_channel=True, calibration="minmax",
             excluded_ops=(), excluded_nodes=(), batch_size=DEFAULT_BATCH_SIZE, progress=True,
             calibration_options=None, signature=None, input_shapes=None, eval_fn=None, max_accuracy_drop=0.01,
             relative=True, max_trials=20, fallback="fp32", kernels="onednn", stem="fp32", max_batches=None,
             safe_mode=True) -> "QuantizedModel":
    """Quantize ``model`` (any form ``kquant.freeze`` accepts) to int8, calibrating on ``calibration_data``.

    ``calibration_data``: an array, a list/tuple of arrays (one per input), a dict name -> array,
    a ``tf.data.Dataset`` or any iterable of batches (``(x, y)`` pairs are fine). At most ``max_batches``
    batches are read (default: 10000 samples, with a warning when data is left). ``calibration``: "minmax",
    "percentile" or "kl". ``excluded_ops``/``excluded_nodes``: one name or a list of names.
    ``kernels``: "onednn" (the fused internal ops, fastest) or "public" (the public Quantized* ops).
    ``stem``: "fp32" (default) keeps the image stem out of int8: a convolution with at most 4 input channels
    reading the model input (through no other conv or matmul), whose input rounding costs the most accuracy;
    "int8" quantizes it too. ``safe_mode=False`` lets a .keras/.h5 file's Lambda code run as it loads.

    Accuracy-aware: with ``eval_fn(predict) -> float`` (higher is better; ``predict(x)`` runs a
    candidate graph), kquant evaluates fp32 and int8 and, while the drop exceeds
    ``max_accuracy_drop`` (a fraction of the fp32 score when ``relative``), tries the other
    calibration algorithms and then keeps the most sensitive ops out of int8 (in ``fallback``
    precision, "fp32" or "bf16"), up to ``max_trials``. The best model is returned either way;
    ``qmodel.trials`` is the log. Every option is checked first (``QuantizationConfig``).
    """
    config = QuantizationConfig(per_channel=per_channel, calibration=calibration,
                                calibration_options=calibration_options, excluded_ops=excluded_ops,
                                excluded_nodes=excluded_nodes, stem=stem, fallback=fallback, kernels=kernels,
                                batch_size=batch_size, max_batches=max_batches, max_accuracy_drop=max_accuracy_drop,
                                relative=relative, max_trials=max_trials)
    check_bool("progress", progress)
    check_callable("eval_fn", eval_fn, "a function predict -> score (a number, higher is better)", optional=True)
    check_calibration_data(calibration_data)
    inputs = names_list("inputs", inputs, optional=True)
    frozen = freeze(model, signature=signature, outputs=outputs, input_shapes=input_shapes, safe_mode=safe_mode)
    if inputs:
        from kquant.converters.graph_def import frozen_from_graph_def

        frozen = frozen_from_graph_def(frozen.graph_def, inputs=inputs, outputs=frozen.output_names)
    result = quantize_frozen(frozen, calibration_data, progress=progress, eval_fn=eval_fn, **config.pipeline_options())
    return QuantizedModel(result)


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
        from kquant.quantization.pipeline import build, plan
        from kquant.quantization.report import layer_report

        result = self.result
        if result.sample is None:
            raise QuantizationError("no calibration batch was kept (ranges came from a log); the report needs one")
        kept_out = set(result.fell_back) | set(result.stems)
        kept = [u for u in plan(result.fp32, result.excluded_ops, result.excluded_nodes) if u.anchor in kept_out]
        order = {node.name: i for i, node in enumerate(result.fp32.graph_def.node)}
        candidates = sorted(list(result.units) + kept, key=lambda u: order[u.output])
        graph, _ = build(result.fp32, result.ranges, result.options, excluded_ops=result.excluded_ops,
                         excluded_nodes=result.excluded_nodes + result.stems, fell_back=result.fell_back,
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
        kinds = collections.Counter(u.kind for u in self.result.units)
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
