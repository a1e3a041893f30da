"""GraphConverter: the seed tools' class-based API (intel_quantization.graph_converter), calibrating in process."""

from __future__ import annotations

import os

from kquant.arguments import check_bool, check_type, names_list
from kquant.converters import freeze
from kquant.data import check_calibration_data
from kquant.errors import CalibrationDataError
from kquant.graph import check_output_is_not_input, node_name
from kquant.quantization.calibration import read_min_max_log
from kquant.quantization.config import QuantizationConfig
from kquant.quantization.pipeline import (
    calibrate,
    fp32_stems,
    optimize,
    plan,
    quantize_frozen,
    tensors_to_calibrate,
)

SEED_LOG_SUFFIXES = ("_eightbit_requant_range", "_requant_range", "__print__")


class GraphConverter:
    """Quantize ``input_graph`` to int8 and write ``output_graph``.

    Seed-compatible signature; instead of a shell command that prints a min/max log,
    ``convert()`` takes calibration data or a callable that returns batches, and optionally
    an existing min/max log (``min_max_log=...``) whose ranges are frozen in as they are.
    """

    def __init__(self, input_graph, output_graph, inputs, outputs, excluded_ops=None, excluded_nodes=None,
                 per_channel=False, *, signature=None, stem="fp32", safe_mode=True):
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

    def convert(self, calibration_data=None, *, calibration="minmax", min_max_log=None, batch_size=64, progress=True,
                max_batches=None):
        """Freeze, optimize, calibrate, rewrite and write ``output_graph``; returns the QuantizedModel."""
        from kquant.api import QuantizedModel
        from kquant.converters.graph_def import frozen_from_graph_def

        config = QuantizationConfig(per_channel=self.per_channel, calibration=calibration,
                                    excluded_ops=self.excluded_ops, excluded_nodes=self.excluded_nodes, stem=self.stem,
                                    batch_size=batch_size, max_batches=max_batches)
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
        result = quantize_frozen(frozen, data, progress=progress, ranges=ranges, **config.pipeline_options())
        model = QuantizedModel(result)
        if self.output_graph:
            model.save(self.output_graph)
        return model

    covert = convert  # the seed tools' spelling

    def _ranges_with_log(self, frozen, data, log, config, progress) -> dict:
        """Ranges from the log for the units it names; the rest (e.g. fp32 -> int8 inputs) calibrated from data."""
        fp32 = optimize(frozen)
        logged_units = plan(fp32, self.excluded_ops, self.excluded_nodes)  # with the stems: the log names their ranges
        logged = ranges_from_log(read_min_max_log(log) if isinstance(log, (str, os.PathLike)) else log, logged_units)
        stems = fp32_stems(fp32, self.excluded_ops, self.excluded_nodes, self.stem)
        units = plan(fp32, self.excluded_ops, self.excluded_nodes + list(stems))
        missing = [t for t in tensors_to_calibrate(units) if t not in logged]
        if missing and data is None:
            raise CalibrationDataError(
                f"the min/max log has no range for {', '.join(missing[:5])}; pass calibration data for them too"
            )
        measured = calibrate(fp32, units, data, method=config.calibration, batch_size=config.batch_size, progress=progress,
                             max_batches=config.max_batches) if missing else {}
        return {**measured, **logged}


def ranges_from_log(log_ranges: dict, units) -> dict:
    """Map a seed min/max log's entries (named after the conv/matmul node) to unit output tensors."""
    by_node = {}
    for unit in units:
        for name in unit.nodes:
            by_node[name] = unit.output_tensor
    ranges = {}
    for key, value in log_ranges.items():
        name = node_name(key)
        for suffix in SEED_LOG_SUFFIXES:
            name = name.removesuffix(suffix)
        if name in by_node:
            ranges[by_node[name]] = value
    return ranges
