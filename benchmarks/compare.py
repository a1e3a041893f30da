"""kquant int8 against TF fp32 and the int8 of Intel Neural Compressor, TFLite, OpenVINO + NNCF and ONNX Runtime,
on four models; one process per model.

    python benchmarks/compare.py [--runs 200] [--models fashion_cnn,wide_deep,fer,resnet20] [--markdown OUT.md]

Peers: pip install -r benchmarks/requirements.txt (how, in that file). Each model runs in its own subprocess; in
it every variant is timed in interleaved rounds (kquant.benchmark.time_interleaved) at batch 1 (latency) and
batch 32 (throughput), every runtime on THREADS threads. TF fp32 is the optimized fp32 graph with oneDNN on, the
baseline kquant's int8 is built from. TensorFlow reads TF_ENABLE_ONEDNN_OPTS once per process, so TF's default on
this CPU (Eigen, oneDNN off) is timed in a second subprocess on the same fp32 graph, not interleaved: a side note,
not a column. INC and TFLite quantize the same frozen fp32 graph kquant does; OpenVINO (f32 precision hint) runs
the optimized fp32 graph converted as kquant converts its QDQ graph (kquant.quantization.openvino.convert), NNCF
quantizes that model with its defaults, tf2onnx converts the optimized fp32 graph for ONNX Runtime's static QDQ
int8 (per channel); all calibrate on the same samples. kquant int8 (OpenVINO) is kquant.quantize(...,
target="openvino") exported with export(format="openvino"), once with the default stem="fp32" and once with
stem="int8" (NNCF's choice: the image stem in int8 too). A peer that fails on a model (or is not installed) is
recorded as that cell's error.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("fashion_cnn", "wide_deep", "fer", "resnet20")
BATCHES = (1, 32)
VARIANTS = ("TF fp32", "kquant int8", "INC int8", "TFLite int8", "OpenVINO fp32", "NNCF int8 (OpenVINO)", "ORT int8",
            "kquant int8 (OpenVINO)", "kquant int8 stem=int8 (OpenVINO)")
KQUANT_OPENVINO = ("kquant int8 (OpenVINO)", "kquant int8 stem=int8 (OpenVINO)")
OPENVINO_WEIGHTED = ("Convolution", "FullyConnected", "MatMul")  # the compiled model's layer types with weights
THREADS = 2  # every runtime's intra-op threads: TF's session, TFLite's interpreter, OpenVINO's CPU plugin, ORT


# ---------------------------------------------------------------- models: (model, calibration, eval data, labels)

def _example(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / "keras" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fashion_cnn():
    model, (x, _), (xt, yt) = _example("fashion_mnist_cnn").train()
    return "Fashion-MNIST CNN (3 conv+BN+ReLU, 2 dense; 2 epochs on 20k)", model, x[:1000], xt, yt


def wide_deep():
    model, (x, _), (xt, yt) = _example("wide_deep_adult").train()
    return "Adult Wide & Deep (embeddings + 4 dense; 3 epochs)", model, {k: v[:2000] for k, v in x.items()}, xt, yt


def fer():
    import keras

    from kquant import datasets

    faces = datasets.lfw_faces()
    model = keras.models.load_model(datasets.fer_model_path(), compile=False)
    return "fer mini-Xception, pretrained (agreement on 100 unseen LFW faces)", model, faces[:100], faces[100:], None


def resnet20():
    """ResNet-20 (CIFAR layout: 19 3x3 convs + 2 projection 1x1 convs, BN, 16/32/64 channels), 1 epoch on 15k."""
    import keras

    from kquant import datasets

    def bn(x):  # momentum 0.9: the moving statistics settle within one short epoch
        return keras.layers.BatchNormalization(momentum=0.9)(x)

    def block(x, filters, stride):
        shortcut = x
        y = keras.layers.Conv2D(filters, 3, stride, padding="same", use_bias=False)(x)
        y = keras.layers.ReLU()(bn(y))
        y = bn(keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(y))
        if stride != 1 or x.shape[-1] != filters:
            shortcut = bn(keras.layers.Conv2D(filters, 1, stride, use_bias=False)(x))
        return keras.layers.ReLU()(keras.layers.Add()([y, shortcut]))

    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28, 1), name="image")
    x = keras.layers.ReLU()(bn(keras.layers.Conv2D(16, 3, padding="same", use_bias=False)(inputs)))
    for filters, stride in ((16, 1), (32, 2), (64, 2)):
        for i in range(3):
            x = block(x, filters, stride if i == 0 else 1)
    outputs = keras.layers.Dense(10, name="logits")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    x, y = datasets.fashion_mnist("train")
    xt, yt = datasets.fashion_mnist("test")
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:15000], y[:15000], epochs=1, batch_size=128, verbose=0)
    return "ResNet-20 on Fashion-MNIST (21 convs, BN, Add; 1 epoch on 15k)", model, x[20000:20500], xt, yt


# ---------------------------------------------------------------- variants: call(arrays) -> closure, predict(columns)

def _rows(column, count):
    return column[:count] if len(column) >= count else np.concatenate([column] * -(-count // len(column)))[:count]


@dataclasses.dataclass
class Variant:
    """A built variant: its runner (call, predict), the seconds it took to quantize (None for fp32), its file size,
    extra numbers to record."""

    runner: object
    quantize_s: float | None
    size_bytes: int
    extra: dict = dataclasses.field(default_factory=dict)


class Runner:
    """``self.run(*arrays)`` -> outputs list, timed as call(arrays) and run over the eval data by predict(columns)."""

    def call(self, arrays):
        return lambda: self.run(*arrays)

    def predict(self, columns):
        return np.concatenate([self.run(*[c[i:i + 256] for c in columns])[0] for i in range(0, len(columns[0]), 256)])


class TFGraph(Runner):
    """A GraphDef run through kquant.GraphRunner, fed in the fp32 graph's input order."""

    def __init__(self, graph_def, inputs, output):
        import kquant

        self.run = kquant.GraphRunner(graph_def, inputs, [output], threads=THREADS)
        self.op_census = dict(sorted(collections.Counter(node.op for node in graph_def.node).items()))


class OpenVinoModel(Runner):
    """An ov.Model in kquant's OpenVinoRunner (CPU, f32 precision hint). op_census: the layers of the compiled model
    by layer type and runtime precision (u8/i8: int8), read from the model as compiled for timing."""

    def __init__(self, model, inputs):
        from kquant.quantization.openvino import OpenVinoRunner

        self.run = OpenVinoRunner(model, inputs, threads=THREADS, precision="f32")
        infos = [op.get_rt_info() for op in self.run.compiled.get_runtime_model().get_ops()]
        census = collections.Counter(f"{i['layerType'].astype(str)} {i['runtimePrecision'].astype(str)}" for i in infos)
        self.op_census = dict(sorted(census.items()))


class OnnxModel(Runner):
    """An ONNX model in an ORT InferenceSession (CPUExecutionProvider). op_census: the op types of the graph as ORT
    optimized it (QLinearConv and the like run in int8)."""

    def __init__(self, content, inputs):
        import onnx
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = THREADS
        with tempfile.TemporaryDirectory() as tmp:
            options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
            session = ort.InferenceSession(content, options, providers=["CPUExecutionProvider"])
            optimized = onnx.load(options.optimized_model_filepath)
        self.op_census = dict(sorted(collections.Counter(node.op_type for node in optimized.graph.node).items()))
        self.run = lambda *arrays: session.run(None, dict(zip(inputs, arrays)))


class TFLiteModel:
    """A .tflite flatbuffer in tf.lite.Interpreter (XNNPACK, THREADS threads), one interpreter per batch size."""

    def __init__(self, content, input_nodes):
        self.content = content
        self.input_nodes = input_nodes
        self.interpreters = {}

    def _interpreter(self, batch):
        import tensorflow as tf

        if batch not in self.interpreters:
            interpreter = tf.lite.Interpreter(model_content=self.content, num_threads=THREADS)
            details = interpreter.get_input_details()
            for detail in details:
                interpreter.resize_tensor_input(detail["index"], [batch, *detail["shape"][1:]])
            interpreter.allocate_tensors()
            order = [next(d["index"] for d in details if d["name"].split(":")[0].endswith(node)) for node in self.input_nodes]
            self.interpreters[batch] = (interpreter, order, interpreter.get_output_details()[0]["index"])
        return self.interpreters[batch]

    def call(self, arrays):
        interpreter, order, output = self._interpreter(len(arrays[0]))

        def run():
            for index, array in zip(order, arrays):
                interpreter.set_tensor(index, array)
            interpreter.invoke()
            return interpreter.get_tensor(output)

        return run

    def predict(self, columns):
        chunks, rows = [], len(columns[0])
        for start in range(0, rows, 32):
            chunk = [_rows(c[start:start + 32], 32) for c in columns]
            chunks.append(self.call(chunk)()[: min(32, rows - start)])
        return np.concatenate(chunks)


def kquant_int8(frozen, calibration):
    import kquant

    start = time.perf_counter()
    qmodel = kquant.quantize(frozen, calibration, progress=False)
    seconds = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        size = qmodel.save(Path(tmp) / "int8.pb").stat().st_size  # the file as written
    return Variant(TFGraph(qmodel.graph_def, frozen.input_names, frozen.output_names[0]), seconds, size)


def inc_int8(frozen, calibration):
    import logging

    from neural_compressor.tensorflow import StaticQuantConfig, quantize_model
    from neural_compressor.tensorflow.utils import BaseDataLoader

    logging.getLogger("neural_compressor").setLevel(logging.ERROR)
    columns = _columns(calibration, frozen)

    class Samples:  # INC's dataset: indexable (input, label) pairs
        def __len__(self):
            return len(columns[0])

        def __getitem__(self, i):
            return (columns[0][i] if len(columns) == 1 else [c[i] for c in columns]), 0

    start = time.perf_counter()
    result = quantize_model(frozen.graph_def, StaticQuantConfig(), calib_dataloader=BaseDataLoader(dataset=Samples(), batch_size=32),
                            calib_iteration=math.ceil(len(columns[0]) / 32))
    seconds = time.perf_counter() - start
    if result is None:
        raise RuntimeError("quantize_model returned None")
    names = {n.split(":")[0]: (n if ":" in n else n + ":0") for n in result.input_tensor_names}
    inputs = [names[spec.node] for spec in frozen.inputs]
    output = result.output_tensor_names[0]
    graph = TFGraph(result.graph_def, inputs, output if ":" in output else output + ":0")
    return Variant(graph, seconds, len(_serialized(result.graph_def)))


def tflite_int8(frozen, calibration):
    import tensorflow as tf

    columns = _columns(calibration, frozen)
    start = time.perf_counter()
    wrapped = tf.compat.v1.wrap_function(lambda: tf.graph_util.import_graph_def(frozen.graph_def, name=""), [])
    function = wrapped.prune([wrapped.graph.get_tensor_by_name(n) for n in frozen.input_names],
                             [wrapped.graph.get_tensor_by_name(n) for n in frozen.output_names[:1]])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([c[i:i + 1] for c in columns] for i in range(len(columns[0])))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    content = converter.convert()
    seconds = time.perf_counter() - start
    return Variant(TFLiteModel(content, [spec.node for spec in frozen.inputs]), seconds, len(content))


def openvino_fp32(fp32):
    from kquant.benchmark import _TimedOpenVino
    from kquant.quantization.openvino import convert

    model = convert(fp32.graph_def, fp32, ())  # OpenVINO's TensorFlow frontend on the GraphDef, its outputs the graph's
    return Variant(OpenVinoModel(model, fp32.inputs), None, _TimedOpenVino(model).size_bytes())


def nncf_int8(fp32, calibration):
    """NNCF's post-training quantization with its defaults (300 of the samples at most) on the OpenVINO fp32 model."""
    import nncf

    from kquant.benchmark import _TimedOpenVino
    from kquant.quantization.openvino import convert

    model = convert(fp32.graph_def, fp32, ())
    columns = _columns(calibration, fp32)
    names = [name for port in model.inputs for name in port.get_names()]
    keys = [next(n for n in names if n in (spec.name, spec.node)) for spec in fp32.inputs]  # the graph's input order
    dataset = nncf.Dataset(range(len(columns[0])), lambda i: {key: c[i:i + 1] for key, c in zip(keys, columns)})
    start = time.perf_counter()
    quantized = nncf.quantize(model, dataset)
    seconds = time.perf_counter() - start
    return Variant(OpenVinoModel(quantized, fp32.inputs), seconds, _TimedOpenVino(quantized).size_bytes())


def ort_int8(fp32, calibration):
    """tf2onnx, ORT's pre-processing (without symbolic shape inference where that gives up: noted), then static QDQ
    int8 per channel; the seconds are all three."""
    import tf2onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    columns = _columns(calibration, fp32)
    names = list(fp32.input_names)

    class Samples(CalibrationDataReader):  # batches of 32: min/max ranges do not depend on the batch size
        def __init__(self):
            self.batches = ({n: c[i:i + 32] for n, c in zip(names, columns)} for i in range(0, len(columns[0]), 32))

        def get_next(self):
            return next(self.batches, None)

    start = time.perf_counter()
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # where ORT dumps sym_shape_infer_temp.onnx (and its .data) when symbolic shape inference gives up
        try:
            tf2onnx.convert.from_graph_def(fp32.graph_def, input_names=names, output_names=fp32.output_names[:1],
                                           opset=17, output_path="fp32.onnx")
            try:
                quant_pre_process("fp32.onnx", "prepared.onnx")
                extra = {}
            except Exception as exc:  # ORT raises a bare Exception when its symbolic shape inference gives up
                if "symbolic shape inference" not in str(exc):
                    raise
                quant_pre_process("fp32.onnx", "prepared.onnx", skip_symbolic_shape=True)  # ORT's advice for such graphs
                extra = {"note": f"quant_pre_process(skip_symbolic_shape=True): {exc}"}
            quantize_static("prepared.onnx", "int8.onnx", Samples(), quant_format=QuantFormat.QDQ, per_channel=True)
            content = Path("int8.onnx").read_bytes()
        finally:
            os.chdir(cwd)
    seconds = time.perf_counter() - start
    return Variant(OnnxModel(content, names), seconds, len(content), extra)


def kquant_openvino(frozen, calibration, stem):
    """kquant.quantize(..., target="openvino") and its OpenVINO export; quantize_s counts both, export_s the export."""
    import kquant
    from kquant.quantization.openvino import read_ir

    start = time.perf_counter()
    qmodel = kquant.quantize(frozen, calibration, target="openvino", stem=stem, progress=False)
    quantize_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        xml = qmodel.export(Path(tmp) / "int8.xml", format="openvino")
        export_s = time.perf_counter() - start
        model = read_ir(xml)
        size = xml.stat().st_size + xml.with_suffix(".bin").stat().st_size
    return Variant(OpenVinoModel(model, frozen.inputs), quantize_s + export_s, size,
                   {"export_s": export_s, "kquant_quantize_s": quantize_s})


def _columns(data, frozen):
    from kquant.data import iter_batches

    batches = list(iter_batches(data, frozen.inputs, 1 << 30, role="data"))
    return [np.concatenate(c) for c in zip(*batches)]


def _serialized(graph_def):
    from kquant.graph import serialize_graph_def

    return serialize_graph_def(graph_def, text=False)


# ---------------------------------------------------------------- one model, in its own process

def measure_model(name, runs, fp32_path):
    import kquant
    from kquant.benchmark import summarize_times, top1
    from kquant.transforms import optimize_for_inference

    description, model, calibration, eval_data, labels = globals()[name]()
    frozen = kquant.freeze(model)
    fp32 = optimize_for_inference(frozen)
    kquant.save_graph_def(fp32.graph_def, fp32_path)
    variants = {"TF fp32": Variant(TFGraph(fp32.graph_def, fp32.input_names, fp32.output_names[0]), None,
                                   len(_serialized(fp32.graph_def)))}
    # built and timed in this order (time_interleaved alternates it): the OpenVINO int8 variants side by side,
    # between TF and OpenVINO variants, so that none runs right after ORT, whose threads spin idle after a call
    builds = {
        "kquant int8": lambda: kquant_int8(frozen, calibration),
        "kquant int8 (OpenVINO)": lambda: kquant_openvino(frozen, calibration, "fp32"),
        "NNCF int8 (OpenVINO)": lambda: nncf_int8(fp32, calibration),
        "kquant int8 stem=int8 (OpenVINO)": lambda: kquant_openvino(frozen, calibration, "int8"),
        "OpenVINO fp32": lambda: openvino_fp32(fp32),
        "INC int8": lambda: inc_int8(frozen, calibration),
        "TFLite int8": lambda: tflite_int8(frozen, calibration),
        "ORT int8": lambda: ort_int8(fp32, calibration),
    }
    errors = {}
    for key, build in builds.items():
        try:
            variants[key] = build()
        except Exception as exc:  # a peer failing on a model is a result, recorded as such
            errors[key] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    columns = _columns(eval_data, fp32)
    timings = {key: {batch: summarize_times(batch, seconds) for batch, seconds in by_batch.items()}
               for key, by_batch in _time_batches(variants, columns, runs).items()}
    head_to_head = _openvino_head_to_head(variants, columns, runs)
    classes = {key: top1(variant.runner.predict(columns)) for key, variant in variants.items()}
    results = {}
    for key, variant in variants.items():
        results[key] = {
            "size_bytes": variant.size_bytes,
            "quantize_s": variant.quantize_s,
            **variant.extra,
            "latency_b1_ms": timings[key][1].median_ms,
            "latency_b1_p90_ms": timings[key][1].p90_ms,
            "throughput_b32": timings[key][32].throughput,
            "accuracy": None if labels is None else 100.0 * float(np.mean(classes[key] == labels)),
            "agreement": 100.0 * float(np.mean(classes[key] == classes["TF fp32"])),
            **({"op_census": variant.runner.op_census} if hasattr(variant.runner, "op_census") else {}),
            **head_to_head.get(key, {}),
        }
    for key, error in errors.items():
        results[key] = {"error": error}
    return {"model": name, "description": description, "records": len(columns[0]), "runs": runs, "variants": results}


def _time_batches(variants, columns, runs, rounds=None) -> dict:
    """key -> batch -> the seconds of ``runs`` calls of each variant on the first rows of ``columns``, interleaved
    (``kquant.benchmark.time_interleaved``, in its ROUNDS unless ``rounds``)."""
    from kquant.benchmark import ROUNDS, time_interleaved

    times = {key: {} for key in variants}
    for batch in BATCHES:
        arrays = [_rows(c, batch) for c in columns]
        calls = {key: variant.runner.call(arrays) for key, variant in variants.items()}
        for key, seconds in time_interleaved(calls, runs, rounds=rounds or ROUNDS).items():
            times[key][batch] = seconds
    return times


def _openvino_head_to_head(variants, columns, runs) -> dict:
    """The OpenVINO int8 variants (NNCF's, kquant's) timed again among themselves, alternating call by call, 4 x
    ``runs`` calls each: in the timing of all variants the other runtimes' threads (ORT's spin after a call) slow
    whichever runs next by more than the few per cent the target is about. key -> {"h2h_b1_ms", "h2h_b32_ms"}."""
    keys = [key for key in ("NNCF int8 (OpenVINO)", *KQUANT_OPENVINO) if key in variants]
    times = _time_batches({key: variants[key] for key in keys}, columns, 4 * runs, rounds=4 * runs)
    return {key: {f"h2h_b{batch}_ms": float(np.median(seconds)) * 1e3 for batch, seconds in by_batch.items()}
            for key, by_batch in times.items()}


def measure_eigen(fp32_path, runs):
    """The fp32 graph with TF's default kernels on this CPU (run with TF_ENABLE_ONEDNN_OPTS=0)."""
    import kquant
    from kquant.benchmark import summarize_times, time_interleaved

    frozen = kquant.freeze(fp32_path)
    runner = TFGraph(frozen.graph_def, frozen.input_names, frozen.output_names[0])
    specs = [(s.shape[1:], s.dtype) for s in frozen.inputs]
    result = {"onednn": kquant.onednn_enabled()}
    for batch in BATCHES:
        arrays = [np.zeros((batch, *shape), dtype) for shape, dtype in specs]
        seconds = time_interleaved({"eigen": runner.call(arrays)}, runs)["eigen"]
        result[f"b{batch}"] = summarize_times(batch, seconds).median_ms
    return result


# ---------------------------------------------------------------- the parent: one subprocess per model, then the table

def environment(command):
    import kquant  # noqa: F401  (sets up TensorFlow first)
    import keras
    import tensorflow as tf

    flags = set()
    model_name = platform.processor()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
        if line.startswith("model name"):
            model_name = line.split(":", 1)[1].strip()
    wanted = sorted(f for f in flags if f.startswith(("avx", "amx")) or "vnni" in f or f in ("fma", "f16c"))
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {
        "date": datetime.date.today().isoformat(),
        "command": command,
        "commit": commit,
        "cpu": model_name,
        "cores": os.cpu_count(),
        "cpu_flags": wanted,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "neural_compressor": _installed_version("neural-compressor-tf"),
        "openvino": _installed_version("openvino"),
        "nncf": _installed_version("nncf"),
        "onnxruntime": _installed_version("onnxruntime"),
        "tf2onnx": _installed_version("tf2onnx"),
        "onnx": _installed_version("onnx"),
    }


def _installed_version(distribution: str) -> str:
    """The installed version, or "not installed" (its column then records the import error)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "not installed"


def run_child(args, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    result = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        sys.stderr.write(result.stderr[-4000:])
        raise SystemExit(f"compare.py {' '.join(args)} failed with status {result.returncode}")


def markdown(env, results) -> str:
    missing = [name for name, found in (("AVX-512", any(f.startswith("avx512") for f in env["cpu_flags"])),
                                        ("VNNI", any("vnni" in f for f in env["cpu_flags"]))) if not found]
    lines = [
        f"Date {env['date']}, commit {env['commit']}; {env['cpu']}, {env['cores']} cores; CPU flags: {' '.join(env['cpu_flags'])}",
        ("(no " + ", no ".join(missing) + "); " if missing else "") + f"Python {env['python']}, TensorFlow {env['tensorflow']}, Keras {env['keras']}, "
        f"Neural Compressor {env['neural_compressor']}; TFLite = tf.lite in TensorFlow {env['tensorflow']} (XNNPACK); "
        f"OpenVINO {env['openvino']} (CPU, f32 precision hint), NNCF {env['nncf']}; ONNX Runtime {env['onnxruntime']} "
        f"(CPUExecutionProvider), tf2onnx {env['tf2onnx']}, onnx {env['onnx']}. Every runtime on {THREADS} threads.",
        "",
        f"Command: `{env['command']}`",
        "",
        "| model | variant | latency b1 (ms, median / p90) | throughput b32 (records/s) | file (kB) | accuracy % (agreement with fp32 %) | quantize (s) | speed-up over TF fp32 b1 / b32 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        variants = result["variants"]
        fp32 = variants["TF fp32"]
        for key in VARIANTS:
            v = variants[key]
            if "error" in v:
                lines.append(f"| {result['model']} | {key} | failed: {v['error']} | | | | | |")
                continue
            quality = (f"{v['accuracy']:.2f} ({v['agreement']:.1f})" if v["accuracy"] is not None else f"agreement {v['agreement']:.1f}")
            speedup = "—" if key == "TF fp32" else (f"{fp32['latency_b1_ms'] / v['latency_b1_ms']:.2f}x / "
                                                     f"{v['throughput_b32'] / fp32['throughput_b32']:.2f}x")
            seconds = "—" if v["quantize_s"] is None else f"{v['quantize_s']:.1f}"
            lines.append(
                f"| {result['model']} | {key} | {v['latency_b1_ms']:.3f} / {v['latency_b1_p90_ms']:.3f} | {v['throughput_b32']:.0f} | "
                f"{v['size_bytes'] / 1e3:.1f} | {quality} | {seconds} | {speedup} |"
            )
    lines += ["", "Ratios (kquant int8 over each; latency: below 1 is faster, throughput and size: above 1 is more / bigger):", "",
              "| model | kquant/fp32 latency b1 | kquant/fp32 throughput b32 | kquant/INC latency b1 | kquant/INC throughput b32 | "
              "kquant/TFLite latency b1 | kquant/TFLite throughput b32 | kquant/INC size | kquant/TFLite size | TF fp32 Eigen (oneDNN off) b1 / b32 ms |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for result in results:
        variants, kq = result["variants"], result["variants"]["kquant int8"]
        cells = []
        for key in ("TF fp32", "INC int8", "TFLite int8"):
            other = variants[key]
            ok = "error" not in other and "error" not in kq
            cells += [f"{kq['latency_b1_ms'] / other['latency_b1_ms']:.2f}" if ok else "—",
                      f"{kq['throughput_b32'] / other['throughput_b32']:.2f}" if ok else "—"]
        for key in ("INC int8", "TFLite int8"):
            other = variants[key]
            cells.append(f"{kq['size_bytes'] / other['size_bytes']:.2f}" if "error" not in other and "error" not in kq else "—")
        eigen = result.get("eigen")
        fp32 = variants["TF fp32"]
        cells.append(f"{eigen['b1']:.3f} / {eigen['b32']:.3f} (oneDNN {fp32['latency_b1_ms']:.3f} / {32e3 / fp32['throughput_b32']:.3f})"
                     if eigen else "—")
        lines.append(f"| {result['model']} | " + " | ".join(cells) + " |")
    lines += ["", "kquant → OpenVINO (default stem=\"fp32\", and stem=\"int8\") against NNCF int8 (OpenVINO) and TF fp32 "
              "(speed: the other's median time over kquant's, above 1 is faster; against NNCF from the OpenVINO int8 "
              "variants timed again among themselves, alternating call by call, 4 × --runs each; target: at least "
              "0.95; export: seconds of export(format=\"openvino\") and of the quantize before it):", "",
              "| model | stem | speed vs NNCF b1 | speed vs NNCF b32 | ≥ 0.95× NNCF | speed vs TF fp32 b1 | "
              "accuracy % (agreement %): kquant→OV / NNCF→OV / TF fp32 | int8 convs+matmuls: kquant→OV / NNCF→OV | export / quantize |",
              "|---|---|---|---|---|---|---|---|---|"]
    for result in results:
        for key in KQUANT_OPENVINO:
            stem = "int8" if "stem=int8" in key else "fp32"
            lines.append(f"| {result['model']} | {stem} | " + " | ".join(_openvino_ratios(result["variants"], key)) + " |")
    notes = [f"{r['model']} {key}: {v['note']}" for r in results for key, v in r["variants"].items() if "note" in v]
    lines += ["", "Notes: " + "; ".join(notes) + "."] if notes else []
    lines += ["", "Models: " + "; ".join(f"{r['model']}: {r['description']}, {r['records']} eval records" for r in results) + "."]
    return "\n".join(lines)


def _openvino_ratios(variants, key) -> list[str]:
    """The cells of a kquant→OpenVINO row (variant ``key``): speed against NNCF and TF fp32, accuracy, int8 layers of
    each, export time over quantize time."""
    from kquant.quantization.openvino import INT8_PRECISIONS

    kq, nncf, fp32 = variants[key], variants["NNCF int8 (OpenVINO)"], variants["TF fp32"]

    def quality(v):
        if "error" in v:
            return "failed"
        return f"{v['accuracy']:.2f} ({v['agreement']:.1f})" if v["accuracy"] is not None else f"agreement {v['agreement']:.1f}"

    def int8_layers(v):
        if "error" in v:
            return "—"
        weighted = [(key.split()[1], count) for key, count in v["op_census"].items() if key.split()[0] in OPENVINO_WEIGHTED]
        return f"{sum(count for precision, count in weighted if precision in INT8_PRECISIONS)} of {sum(c for _, c in weighted)}"

    if "error" in kq:
        return ["—"] * 4 + [f"failed / {quality(nncf)} / {quality(fp32)}", f"— / {int8_layers(nncf)}", "—"]
    if "error" in nncf:
        b1 = b32 = meets = "—"
    else:
        b1, b32 = nncf["h2h_b1_ms"] / kq["h2h_b1_ms"], nncf["h2h_b32_ms"] / kq["h2h_b32_ms"]
        meets = "yes" if min(b1, b32) >= 0.95 else "no"
        b1, b32 = f"{b1:.2f}x", f"{b32:.2f}x"
    return [b1, b32, meets, f"{fp32['latency_b1_ms'] / kq['latency_b1_ms']:.2f}x",
            f"{quality(kq)} / {quality(nncf)} / {quality(fp32)}", f"{int8_layers(kq)} / {int8_layers(nncf)}",
            f"{kq['export_s']:.2f} / {kq['kquant_quantize_s']:.2f} s"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="timed runs per variant and batch size (default 200)")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}")
    parser.add_argument("--markdown", help="also write the table to this file")
    parser.add_argument("--json", help="also write every number to this JSON file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--eigen", help=argparse.SUPPRESS)
    parser.add_argument("--fp32", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))  # this checkout's kquant, before any import of it
    if args.child or args.eigen:
        result = measure_model(args.child, args.runs, args.fp32) if args.child else measure_eigen(args.eigen, args.runs)
        Path(args.out).write_text(json.dumps(result))
        return
    command = "python benchmarks/compare.py " + " ".join(argv if argv is not None else sys.argv[1:])
    env = environment(command.strip())
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            out, fp32, eigen_out = Path(tmp) / f"{name}.json", Path(tmp) / f"{name}_fp32.pb", Path(tmp) / f"{name}_eigen.json"
            print(f"{name} ...", file=sys.stderr, flush=True)
            run_child(["--child", name, "--runs", str(args.runs), "--fp32", str(fp32), "--out", str(out)])
            run_child(["--eigen", str(fp32), "--runs", str(args.runs), "--out", str(eigen_out)], {"TF_ENABLE_ONEDNN_OPTS": "0"})
            result = json.loads(out.read_text())
            eigen = json.loads(eigen_out.read_text())
            result["eigen"] = eigen if not eigen.pop("onednn") else None
            results.append(result)
    table = markdown(env, results)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps({"environment": env, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
