"""Benchmark fp32 against int8: latency, throughput, file size, accuracy or agreement; timing rounds interleaved."""

from __future__ import annotations

import dataclasses
import functools
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from tensorflow.core.framework import graph_pb2
from tqdm.auto import tqdm

from kquant.arguments import check_bool, check_int
from kquant.converters import freeze
from kquant.data import iter_batches
from kquant.errors import ConfigurationError
from kquant.graph import FrozenGraph, load_graph_def, serialize_graph_def, without_default_attrs
from kquant.graphdef import check_nodes_exist
from kquant.benchmark_report import BenchmarkReport, DatasetPass, Timing, VariantReport
from kquant.runtime import GraphRunner, ensure_onednn, joined_chunks, session_config

WARMUP_RUNS = 5
ROUNDS = 5


def benchmark(model, int8=None, *, batches=(1, 32), runs=100, data=None, labels=None, reference=None,
              progress=True, safe_mode=True) -> BenchmarkReport:
    """Time ``model`` (its optimized fp32 graph) and, if given, the ``int8`` graph in interleaved rounds.

    ``model``: anything ``kquant.freeze`` accepts, or an OpenVINO IR (.xml, its .bin beside it). ``int8``: a
    QuantizedModel (run on its target: TF, or its OpenVINO form for ``target="openvino"``), a .pb/.pbtxt path, a
    GraphDef or a FrozenGraph with the same input and output names, or an OpenVINO .xml. ``data`` (default: random
    inputs) is timed at each of ``batches`` (rows repeated when fewer) and, when given, evaluated: classification
    accuracy against ``labels``, top-1 agreement with ``reference`` outputs (default: the fp32 model's).
    """
    batches = _checked_batches(batches)
    check_int("runs", runs, minimum=1)
    check_bool("progress", progress)
    if data is None and (labels is not None or reference is not None):
        raise ConfigurationError("labels and reference describe data; pass data too")
    threads = session_config().intra_op_parallelism_threads
    timed = {"fp32": _openvino_ir(model) if _is_ir(model) else _fp32_graph(model, safe_mode)}
    if int8 is not None:
        timed["int8"] = _int8_model(int8, timed["fp32"])
    fp32 = timed["fp32"]
    pass_batch = max(batches)  # the pass over the data runs at the largest timed batch size
    eval_batches = list(iter_batches(data, fp32.inputs, pass_batch, role="benchmark data")) if data is not None else []
    columns = [np.concatenate(c) for c in zip(*eval_batches)] if eval_batches else _random_inputs(fp32, max(batches))
    records = len(columns[0]) if eval_batches else 0
    runners = {}
    total = len(batches) * len(timed) * (runs + WARMUP_RUNS) + len(eval_batches) * len(timed)
    try:
        for name, candidate in timed.items():
            runners[name] = candidate.runner(fp32.inputs, threads)
        with tqdm(total=total, desc="benchmarking", unit="run", disable=not progress, leave=False) as bar:
            timings = {name: {} for name in runners}
            for batch in batches:
                arrays = [_rows(column, batch) for column in columns]
                calls = {name: functools.partial(run, *arrays) for name, run in runners.items()}
                for name, seconds in time_interleaved(calls, runs, bar=bar).items():
                    timings[name][batch] = summarize_times(batch, seconds)
            output = fp32.outputs[0].name
            passes = {name: _predict(run, eval_batches, bar, output) for name, run in runners.items()} if eval_batches else {}
    finally:
        for run in runners.values():
            run.close()
    variants = {name: VariantReport(candidate.label(name), candidate.size_bytes(), timings[name])
                for name, candidate in timed.items()}
    if passes:
        outputs = {name: out for name, (out, _) in passes.items()}
        for name, (_, seconds) in passes.items():
            variants[name].dataset = DatasetPass(pass_batch, len(eval_batches), seconds, records)
        _score(variants, outputs, records, labels, reference)
    return BenchmarkReport(variants, records, threads, "fp32" if reference is None else "reference")


@dataclasses.dataclass
class _TimedGraph:
    """A graph timed in TF's executor; ``written``: the GraphDef of the file kquant writes for it (its size)."""

    graph: FrozenGraph
    written: graph_pb2.GraphDef

    @property
    def inputs(self):
        return self.graph.inputs

    @property
    def outputs(self):
        return self.graph.outputs

    def runner(self, inputs, threads):
        return GraphRunner(self.graph.graph_def, [s.name for s in inputs], self.graph.output_names, threads=threads)

    def label(self, name: str) -> str:
        return name

    def size_bytes(self) -> int:
        return len(serialize_graph_def(self.written, text=False))


@dataclasses.dataclass
class _TimedOpenVino:
    """An OpenVINO model timed in OpenVINO's CPU runtime; ``files``: its .xml and .bin (their size), or None for a
    model in memory (its size is that of the IR it would be saved as)."""

    model: object
    files: tuple | None = None

    def __post_init__(self):
        from kquant.quantization.openvino import model_specs

        self.inputs, self.outputs = model_specs(self.model)

    def runner(self, inputs, threads):
        from kquant.quantization.openvino import OpenVinoRunner

        return OpenVinoRunner(self.model, inputs, threads=threads)

    def label(self, name: str) -> str:
        return f"{name} (OpenVINO)"

    def size_bytes(self) -> int:
        if self.files is not None:
            return sum(path.stat().st_size for path in self.files)
        from kquant.quantization.openvino import import_openvino

        with tempfile.TemporaryDirectory(prefix="kquant-bench-") as folder:
            xml = Path(folder) / "model.xml"
            import_openvino().save_model(self.model.clone(), str(xml), compress_to_fp16=False)
            return xml.stat().st_size + xml.with_suffix(".bin").stat().st_size


def _is_ir(model) -> bool:
    return isinstance(model, (str, os.PathLike)) and Path(model).suffix.lower() == ".xml"


def _openvino_ir(path) -> _TimedOpenVino:
    from kquant.quantization.openvino import read_ir

    model = read_ir(path)
    return _TimedOpenVino(model, (Path(path), Path(path).with_suffix(".bin")))


def _fp32_graph(model, safe_mode) -> _TimedGraph:
    from kquant.transforms import optimize_for_inference

    graph = optimize_for_inference(freeze(model, safe_mode=safe_mode))
    return _TimedGraph(graph, graph.graph_def)


def _int8_model(int8, fp32):
    """The int8 model to time: an OpenVINO IR or a target="openvino" QuantizedModel's OpenVINO form, else the int8
    GraphDef as given, fed and fetched by the fp32 model's tensor names."""
    if _is_ir(int8):
        return _openvino_ir(int8)
    if getattr(int8, "target", None) == "openvino":
        return _TimedOpenVino(int8.openvino_model())
    ensure_onednn()
    graph = _int8_graph(int8, fp32)
    return _TimedGraph(graph, without_default_attrs(graph.graph_def))


def time_interleaved(calls: dict, runs: int, *, warmup: int = WARMUP_RUNS, rounds: int = ROUNDS, bar=None) -> dict:
    """Seconds of each of ``runs`` calls per callable, in ``rounds`` alternating rounds so noise hits all alike."""
    for call in calls.values():
        for _ in range(warmup):
            call()
        if bar is not None:
            bar.update(warmup)
    seconds = {name: [] for name in calls}
    rounds = min(rounds, runs)
    for index in range(rounds):
        count = runs // rounds + (index < runs % rounds)
        order = list(calls.items())
        for name, call in order if index % 2 == 0 else reversed(order):
            for _ in range(count):
                start = time.perf_counter()
                call()
                seconds[name].append(time.perf_counter() - start)
            if bar is not None:
                bar.update(count)
    return seconds


def summarize_times(batch: int, seconds) -> Timing:
    """Median and 90th percentile of call times, in milliseconds."""
    return Timing(batch, statistics.median(seconds) * 1e3, float(np.percentile(seconds, 90)) * 1e3, len(seconds))


def top1(outputs) -> np.ndarray:
    """Class ids: argmax over the last axis, or probability > 0.5 for a single-unit (sigmoid) output."""
    outputs = np.asarray(outputs)
    if outputs.ndim == 1:
        return outputs.astype(np.int64)
    if outputs.shape[-1] == 1:
        return (outputs[..., 0] > 0.5).astype(np.int64)
    return outputs.argmax(-1)


def _top5(outputs, labels) -> float | None:
    """Percent of rows whose label is among the 5 highest scores; None for fewer than 5 classes."""
    outputs = np.asarray(outputs)
    if outputs.ndim != 2 or outputs.shape[-1] < 5:
        return None
    best = np.argpartition(-outputs, 4, axis=-1)[:, :5]
    return 100.0 * float(np.mean((best == labels[:, None]).any(-1)))


def _int8_graph(int8, fp32) -> FrozenGraph:
    """The int8 GraphDef as given, fed and fetched by the fp32 model's tensor names (``fp32.inputs``/``outputs``)."""
    if isinstance(int8, graph_pb2.GraphDef):
        graph_def = int8
    elif isinstance(getattr(int8, "graph_def", None), graph_pb2.GraphDef):  # a QuantizedModel or a FrozenGraph
        graph_def = int8.graph_def
    else:
        graph_def = load_graph_def(int8)
    check_nodes_exist(graph_def, [spec.name for spec in fp32.inputs], "input")
    check_nodes_exist(graph_def, [spec.name for spec in fp32.outputs], "output")
    return FrozenGraph(graph_def, fp32.inputs, fp32.outputs)


def _checked_batches(batches) -> list[int]:
    given = batches
    batches = [batches] if isinstance(batches, (int, np.integer)) else list(batches) if isinstance(batches, (list, tuple)) else []
    if not batches or any(not isinstance(b, (int, np.integer)) or isinstance(b, bool) or b < 1 for b in batches):
        raise ConfigurationError(f"batches={given!r}; pass positive integers such as (1, 32)")
    return [int(b) for b in dict.fromkeys(batches)]


def _random_inputs(graph: FrozenGraph, rows: int) -> list[np.ndarray]:
    """Uniform [0, 1) floats and zero integers, for timing when no data is given."""
    rng = np.random.default_rng(0)
    arrays = []
    for spec in graph.inputs:
        if spec.shape is None or None in spec.shape[1:]:
            raise ConfigurationError(f"input {spec.node} has no fixed shape; pass data to benchmark on")
        shape = (rows, *spec.shape[1:])
        arrays.append(rng.random(shape).astype(spec.dtype) if spec.dtype.startswith("float") else np.zeros(shape, spec.dtype))
    return arrays


def _rows(column: np.ndarray, count: int) -> np.ndarray:
    """The first ``count`` rows of ``column``, repeated when it has fewer."""
    if len(column) >= count:
        return column[:count]
    return np.concatenate([column] * -(-count // len(column)))[:count]


def _predict(run, batches, bar, output: str) -> tuple[np.ndarray, float]:
    """(the first output over all ``batches``, never glued when it does not follow the batch; the seconds the run
    calls took)."""
    chunks, seconds = [], 0.0
    for batch in batches:
        start = time.perf_counter()
        chunks.append(run(*batch)[0])
        seconds += time.perf_counter() - start
        bar.update(1)
    return joined_chunks(chunks, [len(batch[0]) for batch in batches], output, len(batches[0][0])), seconds


def _score(variants, outputs, records, labels, reference) -> None:
    """Fill accuracy (against labels) and top-1 agreement (against reference outputs, default fp32's)."""
    predicted = {name: top1(out) for name, out in outputs.items()}
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != records:
            raise ConfigurationError(f"{len(labels)} labels for {records} records; pass one label per record")
        for name, classes in predicted.items():
            variants[name].accuracy = 100.0 * float(np.mean(classes == labels))
            correct = int(np.sum(classes == labels))
            variants[name].dataset.correct = correct
            variants[name].dataset.top1 = 100.0 * correct / records
            variants[name].dataset.top5 = _top5(outputs[name], labels)
    if reference is not None:
        expected = top1(reference)
        if len(expected) != records:
            raise ConfigurationError(f"reference has {len(expected)} rows for {records} records; pass one per record")
    elif "int8" in variants:
        expected = predicted["fp32"]
    else:
        return
    for name, classes in predicted.items():
        if reference is not None or name != "fp32":
            variants[name].agreement = 100.0 * float(np.mean(classes == expected))
