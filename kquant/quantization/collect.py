"""Calibration: run the fp32 graph on calibration batches, in process, and collect the ranges the plan needs."""

from __future__ import annotations

import itertools

from tqdm.auto import tqdm

from kquant.data import DEFAULT_BATCH_SIZE, iter_batches
from kquant.preflight import preflight
from kquant.quantization.calibrators import make_calibrator
from kquant.quantization.config import limited_batches
from kquant.quantization.plan import tensors_to_calibrate
from kquant.runtime import GraphRunner


def calibrate(frozen, units, data, *, method="minmax", batch_size=DEFAULT_BATCH_SIZE, progress=True,
              keep_first=None, max_batches=None, **options):
    """Ranges of ``tensors_to_calibrate(units)`` from at most ``max_batches`` batches (None: the default limit of
    ``DEFAULT_CALIBRATION_SAMPLES`` samples, with a warning when data is left); ``keep_first`` (a list) receives
    the first batch."""
    batches = limited_batches(iter_batches(data, frozen.inputs, batch_size, role="calibration data"), max_batches)
    if keep_first is not None:
        batches = _keeping_first(batches, keep_first)
    return collect_ranges(frozen.graph_def, frozen.input_names, tensors_to_calibrate(units), batches,
                          method=method, progress=progress, **options)


def collect_ranges(graph_def, inputs, tensors, batches, *, method="minmax", progress=True, **options) -> dict:
    """Feed ``batches`` (lists of arrays in ``inputs`` order) and return tensor -> (min, max).

    Statistics stream through the calibrator, so memory does not grow with the number of batches. The first
    batch runs in a child process first (kquant.preflight): fetching many tensors is what made TensorFlow abort.
    The graph runs without grappler: its passes would copy the constants several times over (the peak of a big
    model) for a handful of runs, and the values fetched are the same.
    """
    tensors = sorted(set(tensors))
    calibrator = make_calibrator(method, **options)
    if not tensors:
        return {}
    batches = iter(batches)
    first = next(batches, None)
    if first is None:
        return calibrator.compute_ranges()
    preflight(graph_def, inputs, tensors, first, "the fp32 graph for calibration", optimize=False)
    batches = itertools.chain([first], batches)
    with GraphRunner(graph_def, inputs, tensors, optimize=False) as run:
        for batch in tqdm(batches, desc="calibrating", unit="batch", disable=not progress, leave=False):
            for name, values in zip(tensors, run(*batch)):
                calibrator.collect(name, values)
    return calibrator.compute_ranges()


def _keeping_first(batches, keep):
    for batch in batches:
        if not keep:
            keep.append(batch)
        yield batch
