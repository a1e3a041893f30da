"""Run the fp32 graph on calibration batches, in process, and record the ranges of chosen tensors."""

from __future__ import annotations

import itertools

from tqdm.auto import tqdm

from kquant.preflight import preflight
from kquant.quantization.calibration import make_calibrator
from kquant.runtime import GraphRunner


def collect_ranges(graph_def, inputs, tensors, batches, *, method="minmax", progress=True, **options) -> dict:
    """Feed ``batches`` (lists of arrays in ``inputs`` order) and return tensor -> (min, max).

    Statistics stream through the calibrator, so memory does not grow with the number of batches. The first
    batch runs in a child process first (kquant.preflight): fetching many tensors is what made TensorFlow abort.
    """
    tensors = sorted(set(tensors))
    calibrator = make_calibrator(method, **options)
    if not tensors:
        return {}
    batches = iter(batches)
    first = next(batches, None)
    if first is None:
        return calibrator.compute_ranges()
    preflight(graph_def, inputs, tensors, first, "the fp32 graph for calibration")
    batches = itertools.chain([first], batches)
    with GraphRunner(graph_def, inputs, tensors) as run:
        for batch in tqdm(batches, desc="calibrating", unit="batch", disable=not progress, leave=False):
            for name, values in zip(tensors, run(*batch)):
                calibrator.collect(name, values)
    return calibrator.compute_ranges()
