"""GraphConverter: the seed tools' class-based API (intel_quantization.graph_converter), as a thin adapter over
``kquant.quantization.pipeline``; and ``save_stages``, which writes what the seed tools left on disk.

Where its defaults differ from ``kquant.quantize``: ``per_channel=False`` (the seed tools quantized weights per
tensor) and ``batch_size=64`` (their calibration batch).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from kquant.arguments import check_bool, check_type, names_list
from kquant.converters import freeze
from kquant.data import check_calibration_data
from kquant.errors import CalibrationDataError
from kquant.graph import check_output_is_not_input, save_graph_def
from kquant.quantization.collect import calibrate
from kquant.quantization.config import QuantizationConfig
from kquant.quantization.model import QuantizedModel
from kquant.quantization.pipeline import quantize_frozen
from kquant.quantization.plan import tensors_to_calibrate
from kquant.quantization.seed_logs import ranges_from_log, write_min_max_log

STAGE_FILES = ("fp32_optimized.pb", "int8_before_merge.pb", "min_max_log.txt")
SEED_BATCH_SIZE = 64


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
        self.config = QuantizationConfig(per_channel=per_channel, excluded_ops=excluded_ops,
                                         excluded_nodes=excluded_nodes, stem=stem, batch_size=SEED_BATCH_SIZE)
        self.input_graph = input_graph
        self.output_graph = check_type("output_graph", output_graph, (str, os.PathLike), "a .pb/.pbtxt path or None",
                                       optional=True)
        self.inputs = names_list("inputs", inputs)
        self.outputs = names_list("outputs", outputs)
        self.signature = check_type("signature", signature, str, "a signature name", optional=True)
        self.safe_mode = check_bool("safe_mode", safe_mode)
        self.debug = check_bool("debug", debug)
        self.stages_dir = check_type("stages_dir", stages_dir, (str, os.PathLike), "a directory path or None", optional=True)

    def convert(self, calibration_data=None, *, calibration="minmax", min_max_log=None, batch_size=SEED_BATCH_SIZE,
                progress=True, max_batches=None, eval_fn=None, max_accuracy_drop=0.01, target="tensorflow"):
        """Freeze, optimize, calibrate, rewrite and write ``output_graph``; returns the QuantizedModel (``target``: as
        ``kquant.quantize``'s)."""
        from kquant.converters.graph_def import frozen_from_graph_def

        config = dataclasses.replace(self.config, calibration=calibration, batch_size=batch_size,
                                     max_batches=max_batches, max_accuracy_drop=max_accuracy_drop, target=target)
        config.check_runtime()
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
        if min_max_log is None and data is None:
            raise CalibrationDataError("GraphConverter.convert needs calibration data (or a min_max_log); pass one")
        ranges = None if min_max_log is None else (
            lambda prepared: _ranges_with_log(prepared, data, min_max_log, config, progress))
        model = QuantizedModel(quantize_frozen(frozen, data, config, progress=progress, ranges=ranges, eval_fn=eval_fn))
        if self.debug or self.stages_dir:
            save_stages(model, self.stages_dir or f"{Path(self.output_graph or 'kquant').with_suffix('')}_stages")
        if self.output_graph:
            model.save(self.output_graph)
        return model

    covert = convert  # the seed tools' spelling


def _ranges_with_log(prepared, data, log, config, progress) -> dict:
    """Ranges from the log for the units it names (the stems too: the log names their ranges); the rest (e.g.
    fp32 -> int8 inputs) calibrated from data."""
    logged = ranges_from_log(log, prepared.planned)
    missing = [t for t in tensors_to_calibrate(prepared.candidates) if t not in logged]
    if missing and data is None:
        raise CalibrationDataError(
            f"the min/max log has no range for {', '.join(missing[:5])}; pass calibration data for them too")
    measured = calibrate(prepared.fp32, prepared.candidates, data, method=config.calibration, batch_size=config.batch_size,
                         progress=progress, max_batches=config.max_batches) if missing else {}
    return {**measured, **logged}


def save_stages(model, directory) -> Path:
    """Write the stages of ``model`` (a QuantizedModel) to ``directory``: the optimized fp32 graph, the int8 graph
    before identical nodes are merged, and the calibrated ranges as a seed min/max log (``STAGE_FILES``)."""
    result = model.result
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_graph_def(result.fp32.graph_def, directory / STAGE_FILES[0])
    if result.ranges:
        graph_def, _, _ = result.prepared.rewrite(result.ranges, result.options, fell_back=result.fell_back)
        save_graph_def(graph_def, directory / STAGE_FILES[1])
    write_min_max_log(result.ranges, result.prepared.planned if result.prepared else [], directory / STAGE_FILES[2])
    return directory
