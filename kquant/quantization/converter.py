"""GraphConverter: the seed tools' class-based API (intel_quantization.graph_converter), calibrating in process;
and the seed min/max logs it reads and writes."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

from kquant.arguments import check_bool, check_type, names_list
from kquant.converters import freeze
from kquant.data import check_calibration_data
from kquant.errors import CalibrationDataError
from kquant.graph import atomic_write, check_output_is_not_input, node_name, save_graph_def
from kquant.quantization.calibration import read_max_log, read_min_log, read_min_max_log
from kquant.quantization.config import QuantizationConfig
from kquant.quantization.pipeline import (
    calibrate,
    fp32_stems,
    optimize,
    plan,
    quantize_frozen,
    resolve_exclusions,
    tensors_to_calibrate,
)

# the requantize range of a conv/matmul: Intel's quantize_graph (X_eightbit_requant_range) and the stock
# quantize_nodes (X_eightbit/requant_range), as insert_logging(show_name=true) names them
REQUANT_SUFFIXES = ("_eightbit_requant_range", "_eightbit/requant_range", "/eightbit/requant_range", "/requant_range",
                    "_requant_range", "__print__")
# the range of a tensor quantized on entry: Intel's CONSUMER_eightbit_min_TENSOR, stock CONSUMER_eightbit/TENSOR/min
_INPUT_RANGE = (re.compile(r".+?_eightbit_(?P<bound>min|max)_(?P<tensor>.+)"),
                re.compile(r".+?[_/]eightbit/(?P<tensor>.+)/(?P<bound>min|max)"))
_PORT = "__port__"
STAGE_FILES = ("fp32_optimized.pb", "int8_before_merge.pb", "min_max_log.txt")


class GraphConverter:
    """Quantize ``input_graph`` to int8 and write ``output_graph``.

    Seed-compatible signature; instead of a shell command that prints a min/max log,
    ``convert()`` takes calibration data or a callable that returns batches, and optionally
    an existing min/max log (``min_max_log=...``) whose ranges are frozen in as they are.
    ``debug=True`` (or ``stages_dir``) writes the intermediate graphs and the calibrated ranges (``save_stages``)
    to ``stages_dir``, by default ``<output_graph>_stages``.
    """

    def __init__(self, input_graph, output_graph, inputs, outputs, excluded_ops=None, excluded_nodes=None,
                 per_channel=False, *, signature=None, stem="fp32", safe_mode=True,
                 debug=False, stages_dir=None):
        config = QuantizationConfig(per_channel=per_channel, excluded_ops=excluded_ops, excluded_nodes=excluded_nodes,
                                    stem=stem)
        self.input_graph = input_graph
        self.output_graph = check_type("output_graph", output_graph, (str, os.PathLike), "a .pb/.pbtxt path or None",
                                       optional=True)
        self.inputs = names_list("inputs", inputs)
        self.outputs = names_list("outputs", outputs)
        self.excluded_ops = list(config.excluded_ops)
        self.excluded_nodes = list(config.excluded_nodes)
        self.per_channel = config.per_channel
        self.signature = check_type("signature", signature, str, "a signature name", optional=True)
        self.stem = config.stem
        self.safe_mode = check_bool("safe_mode", safe_mode)
        self.debug = check_bool("debug", debug)
        self.stages_dir = check_type("stages_dir", stages_dir, (str, os.PathLike), "a directory path or None", optional=True)

    def convert(self, calibration_data=None, *, calibration="minmax", min_max_log=None, batch_size=64, progress=True,
                max_batches=None, eval_fn=None, max_accuracy_drop=0.01):
        """Freeze, optimize, calibrate, rewrite and write ``output_graph``; returns the QuantizedModel."""
        from kquant.api import QuantizedModel
        from kquant.converters.graph_def import frozen_from_graph_def

        config = QuantizationConfig(per_channel=self.per_channel, calibration=calibration,
                                    excluded_ops=self.excluded_ops, excluded_nodes=self.excluded_nodes, stem=self.stem,
                                    batch_size=batch_size, max_batches=max_batches,
                                    max_accuracy_drop=max_accuracy_drop)
        check_bool("progress", progress)
        check_type("min_max_log", min_max_log, (str, os.PathLike, dict), "a log path, the log text or a dict of ranges",
                   optional=True)
        if self.output_graph:
            check_output_is_not_input(self.output_graph, self.input_graph)
        frozen = freeze(self.input_graph, outputs=self.outputs or None, signature=self.signature,
                        safe_mode=self.safe_mode)
        if self.inputs:
            frozen = frozen_from_graph_def(frozen.graph_def, inputs=self.inputs, outputs=frozen.output_names)
        data = calibration_data() if callable(calibration_data) else calibration_data
        if data is not None:
            check_calibration_data(data)
        ranges = None
        if min_max_log is not None:
            ranges = self._ranges_with_log(frozen, data, min_max_log, config, progress)
        elif data is None:
            raise CalibrationDataError("GraphConverter.convert needs calibration data (or a min_max_log); pass one")
        result = quantize_frozen(frozen, data, progress=progress, ranges=ranges, eval_fn=eval_fn,
                                 **config.pipeline_options())
        model = QuantizedModel(result)
        if self.debug or self.stages_dir:
            save_stages(model, self.stages_dir or f"{Path(self.output_graph or 'kquant').with_suffix('')}_stages")
        if self.output_graph:
            model.save(self.output_graph)
        return model

    covert = convert  # the seed tools' spelling

    def _ranges_with_log(self, frozen, data, log, config, progress) -> dict:
        """Ranges from the log for the units it names; the rest (e.g. fp32 -> int8 inputs) calibrated from data."""
        fp32 = optimize(frozen)
        excluded_nodes = resolve_exclusions(fp32, frozen, self.excluded_ops, self.excluded_nodes)
        logged_units = plan(fp32, self.excluded_ops, excluded_nodes)  # with the stems: the log names their ranges
        logged = ranges_from_log(log, logged_units)
        stems = fp32_stems(fp32, self.excluded_ops, excluded_nodes, self.stem)
        units = plan(fp32, self.excluded_ops, excluded_nodes + tuple(stems))
        missing = [t for t in tensors_to_calibrate(units) if t not in logged]
        if missing and data is None:
            raise CalibrationDataError(
                f"the min/max log has no range for {', '.join(missing[:5])}; pass calibration data for them too"
            )
        measured = calibrate(fp32, units, data, method=config.calibration, batch_size=config.batch_size, progress=progress,
                             max_batches=config.max_batches) if missing else {}
        return {**measured, **logged}


def ranges_from_log(log, units) -> dict:
    """Tensor -> (min, max) from a seed min/max log (a path, the log text, or an already read ``{name: (min, max)}``).

    Requantize ranges (``X_eightbit_requant_range``, ``X/eightbit/requant_range``) go to the output of the unit that
    holds node X; ``__min:``/``__max:`` entries (``C_eightbit_min_T``, ``C_eightbit/T/min``) to tensor T. A log
    whose entries match nothing raises CalibrationDataError; unmatched entries are named in one warning.
    """
    requant, bounds = _log_ranges(log)
    by_node = {name: unit.output_tensor for unit in units for name in unit.nodes}
    wanted = set(tensors_to_calibrate(units))
    ranges, unmatched = {}, []
    for key, value in requant.items():
        name = node_name(key)
        for suffix in REQUANT_SUFFIXES:
            name = name.removesuffix(suffix)
        if name in by_node:
            ranges[by_node[name]] = value
        else:
            unmatched.append(key)
    for tensor, (low, high) in bounds.items():
        if tensor in wanted and low is not None and high is not None:
            ranges.setdefault(tensor, (low, high))
        else:
            unmatched.append(tensor)
    if not ranges:
        raise CalibrationDataError(
            f"none of the {len(requant) + len(bounds)} min/max log entries names an int8 unit of this graph (first: "
            f"{', '.join(sorted(unmatched)[:3])}); log the graph you quantize, e.g. kquant quantize --save-stages DIR")
    if unmatched:
        warnings.warn(f"{len(unmatched)} of {len(requant) + len(bounds)} min/max log entries match no int8 unit and "
                      f"were ignored ({len(ranges)} ranges taken from the others): {', '.join(sorted(unmatched)[:5])}",
                      stacklevel=3)
    return ranges


def _log_ranges(log) -> tuple[dict, dict]:
    """({name: (min, max)} of the requantize entries, {tensor: (min or None, max or None)} of __min/__max entries)."""
    if isinstance(log, dict):
        return dict(log), {}
    requant, bounds = {}, {}
    readers = ((read_min_max_log, None), (read_min_log, 0), (read_max_log, 1))
    for reader, side in readers:
        try:
            found = reader(log)
        except CalibrationDataError as exc:
            if "holds no" not in str(exc):
                raise
            continue
        if side is None:
            requant = found
            continue
        for name, value in found.items():
            tensor = _logged_tensor(name)
            if tensor is None:
                continue
            pair = list(bounds.get(tensor, (None, None)))
            pair[side] = value
            bounds[tensor] = tuple(pair)
    if not requant and not bounds:
        raise CalibrationDataError(f"the min/max log {log if isinstance(log, (str, os.PathLike)) and len(str(log)) < 200 else ''} "
                                   "holds no __requant_min_max, __min or __max entries; give the log of a run of the "
                                   "graph with insert_logging (or kquant quantize --save-stages)")
    return requant, bounds


def _logged_tensor(name: str) -> str | None:
    for pattern in _INPUT_RANGE:
        match = pattern.fullmatch(name)
        if match:
            node, _, port = match.group("tensor").partition(_PORT)
            return f"{node}:{port or 0}"
    return None


def write_min_max_log(ranges: dict, units, path) -> Path:
    """Write ``ranges`` in the seeds' log format, atomically: a ``__requant_min_max`` entry per conv/matmul output
    (named after its anchor, as Intel's quantize_graph names it) and ``__min``/``__max`` entries for every other
    tensor, so ``--min-max-log`` / ``convert(min_max_log=...)`` can freeze them again."""
    outputs = {unit.output_tensor: unit.anchor for unit in units if unit.kind in ("conv", "matmul")}
    lines = []
    for tensor, (low, high) in sorted(ranges.items()):
        if tensor in outputs:
            lines.append(f";{outputs[tensor]}_eightbit_requant_range__print__;__requant_min_max:[{low!r}][{high!r}]")
            continue
        node, port = node_name(tensor), tensor.rpartition(":")[2]
        name = node if port in ("", "0") else f"{node}{_PORT}{port}"
        lines.append(f";kquant_eightbit_min_{name}__print__;__min:[{low!r}]")
        lines.append(f";kquant_eightbit_max_{name}__print__;__max:[{high!r}]")
    with atomic_write(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Path(path)


def save_stages(model, directory) -> Path:
    """Write the stages of ``model`` (a QuantizedModel) to ``directory``: the optimized fp32 graph, the int8 graph
    before identical nodes are merged, and the calibrated ranges as a seed min/max log (``STAGE_FILES``)."""
    from kquant.quantization.rewrite import rewrite_graph

    result = model.result
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_graph_def(result.fp32.graph_def, directory / STAGE_FILES[0])
    units = plan(result.fp32, result.excluded_ops, tuple(result.excluded_nodes) + tuple(result.stems) + tuple(result.fell_back))
    if result.ranges:
        graph_def, _ = rewrite_graph(result.fp32.graph_def, units, result.ranges, result.fp32.output_names, result.options)
        save_graph_def(graph_def, directory / STAGE_FILES[1])
    write_min_max_log(result.ranges, plan(result.fp32, result.excluded_ops, result.excluded_nodes), directory / STAGE_FILES[2])
    return directory
