"""Every keras.applications architecture, in Keras 3 and tf_keras: freeze, optimize, quantize, run; results in ZOO.md.

    python benchmarks/zoo.py [--archs DenseNet121,InceptionV3] [--keras 3|2|both] [--size min|N] [--runs 10]
                             [--out benchmarks/zoo_results] [--timeout 1800] [--report benchmarks/ZOO.md]

Each (architecture, Keras) row runs in its own process (a TensorFlow abort or a hang costs that row only; the
Keras model is built and frozen in a child of it, so Keras's memory is gone before kquant starts) with
random weights (weights=None: coverage and exactness, not accuracy) at the smallest input it accepts (``--size``
picks another side where allowed). One row:

- freeze, optimize, and the optimized fp32 graph's max relative error against the Keras model (bound 1e-4);
- quantize, calibrated on a few preprocessed random images, and the time it took;
- the int8 ops, the QuantizeV2/Dequantize at fp32 borders, and the fp32 convolutions and matmuls left with why;
- the int8 RMS error against the fp32 graph divided by that of the exact 8-bit simulation of the same plan
  (``kquant.quantization.qdq``), on other random images;
- int8 / fp32 speed at batch 1 and 32, timed in interleaved rounds (``kquant.benchmark.time_interleaved``).

Each row is written as one JSON file in ``--out`` and skipped when it exists (delete it to rerun), so a sweep
resumes where it stopped. ``--report`` writes the table of every row found there.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent

# the 40 architectures of keras.applications -> the module with their preprocess_input
ARCHITECTURES = {
    **{f"ConvNeXt{s}": "convnext" for s in ("Tiny", "Small", "Base", "Large", "XLarge")},
    **{f"DenseNet{n}": "densenet" for n in (121, 169, 201)},
    **{f"EfficientNetB{n}": "efficientnet" for n in range(8)},
    **{f"EfficientNetV2{s}": "efficientnet_v2" for s in ("B0", "B1", "B2", "B3", "S", "M", "L")},
    "InceptionResNetV2": "inception_resnet_v2",
    "InceptionV3": "inception_v3",
    "MobileNet": "mobilenet",
    "MobileNetV2": "mobilenet_v2",
    "MobileNetV3Small": "mobilenet_v3",
    "MobileNetV3Large": "mobilenet_v3",
    "NASNetMobile": "nasnet",
    "NASNetLarge": "nasnet",
    **{f"ResNet{n}": "resnet" for n in (50, 101, 152)},
    **{f"ResNet{n}V2": "resnet_v2" for n in (50, 101, 152)},
    "VGG16": "vgg16",
    "VGG19": "vgg19",
    "Xception": "xception",
}
MIN_SIZE = {"Xception": 71, "InceptionV3": 75, "InceptionResNetV2": 75}  # the others accept 32x32
DEFAULT_MIN_SIZE = 32
# the slowest to build, freeze and quantize: timed with fewer runs
BIG = {"ConvNeXtBase", "ConvNeXtLarge", "ConvNeXtXLarge", "EfficientNetB6", "EfficientNetB7", "EfficientNetV2M",
       "EfficientNetV2L", "NASNetLarge", "ResNet152", "ResNet152V2", "VGG16", "VGG19", "InceptionResNetV2"}
KERASES = {"3": "keras", "2": "tf_keras"}
# glibc's malloc keeps freed buffers of up to 32 MiB in its heap, so a row's peak stacks the Keras build, the
# transforms and the sessions: buffers of 1 MiB and more mmapped (and returned when freed) fit ConvNeXtXLarge in 24 GiB
ROW_ENVIRONMENT = {"MALLOC_MMAP_THRESHOLD_": "1048576", **os.environ}
FP32_BOUND = 1e-4
CALIBRATION_IMAGES = 8
EVAL_IMAGES = 8
BATCHES = (1, 32)
# why an op left in the int8 graph runs fp32: TF's int8 kernels are convolutions and matmuls (fusing a bias, Relu
# and a residual sum; matmuls also Sigmoid/Tanh/Elu/LeakyRelu/GELU), pools, concat, reshape and bilinear resize only
FP32_WHY = {
    "Sigmoid": "swish / squeeze-and-excitation gate after a conv (int8 convs fuse only Relu)",
    "Mul": "swish, hard-swish, SE scaling, LayerNorm, GELU or layer scale (no int8 elementwise kernel)",
    "RealDiv": "hard-swish / hard-sigmoid's /6", "Relu6": "hard-swish / hard-sigmoid's relu6(x + 3)",
    "AddV2": "residual sums a conv cannot fuse, hard-swish's +3, LayerNorm",
    "Add": "residual sums a conv cannot fuse", "Sub": "LayerNorm / input normalization",
    "Mean": "global average pooling, SE squeeze, LayerNorm (no int8 reduction)",
    "SquaredDifference": "LayerNorm variance", "Rsqrt": "LayerNorm", "StopGradient": "LayerNorm (Keras 3)",
    "Erfc": "a GELU no MatMul fuses", "Neg": "LayerNorm's mean subtraction, or a GELU no MatMul fuses",
    "Relu": "a ReLU an fp32 op reads (one read only by int8 ops is done by its unsigned QuantizeV2)",
    "FusedBatchNormV3": "pre-activation batch norm with no conv before it to fold into",
    "ConcatV2": "concat of signed or fp32 branches (QuantizedConcat takes unsigned int8 only)",
    "MaxPool": "pool reading an fp32 tensor", "AvgPool": "pool reading an fp32 tensor",
    "Pad": "explicit padding a pool or the fp32 stem reads (ZeroPadding2D)",
    "PartitionedCall": "a function call kquant does not inline (a grouped convolution)",
    "StatefulPartitionedCall": "a function call kquant does not inline (a grouped convolution)",
    "Conv2D": "the image stem (stem='fp32')", "BiasAdd": "the image stem's bias", "Relu6 / Relu": "also the stem's",
    "Reshape": "shape plumbing", "Shape": "shape plumbing", "GatherV2": "shape plumbing",
    "StridedSlice": "NASNet's cropping", "NoOp": "freeze leftover",
}
WEIGHTED = ("Conv2D", "DepthwiseConv2dNative", "MatMul", "BatchMatMulV2", "Einsum", "_FusedConv2D",
            "_FusedDepthwiseConv2dNative", "_FusedMatMul")


def input_size(arch: str, size: str) -> int:
    smallest = MIN_SIZE.get(arch, DEFAULT_MIN_SIZE)
    return smallest if size == "min" else max(int(size), smallest)


def build_model(arch: str, keras_version: str, side: int):
    """(the Keras model with random weights and logits out, its preprocess_input)."""
    keras = __import__(KERASES[keras_version])
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, arch)(weights=None, input_shape=(side, side, 3), classifier_activation=None)
    return model, getattr(keras.applications, ARCHITECTURES[arch]).preprocess_input


def measure(arch: str, keras_version: str, side: int, runs: int) -> dict:
    """One row (see the module docstring)."""
    import numpy as np

    import kquant
    from kquant.benchmark import summarize_times, time_interleaved
    from kquant.quantization.qdq import qdq_graph_def
    from kquant.runtime import GraphRunner

    row = {"arch": arch, "keras": keras_version, "size": side, "runs": runs}
    with tempfile.TemporaryDirectory(prefix="kquant-zoo-") as tmp:  # Keras in a process of its own: see freeze_row
        command = [sys.executable, __file__, "--freeze-row", arch, "--keras", keras_version, "--size", str(side),
                   "--out", tmp]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"building and freezing the Keras model failed (exit {done.returncode}): "
                               f"{_last_line(done.stderr)}")
        with np.load(Path(tmp) / "data.npz") as data:
            calibration, evaluation, reference = data["calibration"], data["evaluation"], data["reference"]
            row["build_s"] = float(data["build_s"])
            row["keras_batch_error"] = float(data["keras_batch_error"])
        frozen = kquant.freeze(str(Path(tmp) / "frozen.pb"))
    row["stage"] = "quantize"

    start = time.perf_counter()
    qmodel = kquant.quantize(frozen, calibration, batch_size=CALIBRATION_IMAGES, progress=False)
    row["quantize_s"] = time.perf_counter() - start
    result, fp32 = qmodel.result, qmodel.result.fp32  # the optimized fp32 graph the int8 one was built from
    row.update(graph_counts(result))
    result.prepared = None  # with ``frozen``, the graph before optimizing: not needed any more
    del frozen, qmodel
    # one session per graph, each used for its outputs and then timed: a big model's sessions are its memory peak
    runners = {"fp32": GraphRunner(fp32.graph_def, fp32.input_names, fp32.output_names)}
    optimized = runners["fp32"](evaluation)[0]
    row["fp32_max_rel_error"] = float(np.abs(optimized - reference).max() / np.abs(reference).max())
    row["stage"] = "run"

    try:
        with GraphRunner(qdq_graph_def(result.fp32, result.units, result.ranges), fp32.input_names, fp32.output_names,
                         optimize=False) as run:
            exact = run(evaluation)[0]
        runners["int8"] = GraphRunner(result.int8.graph_def, fp32.input_names, fp32.output_names)
        got = runners["int8"](evaluation)[0]
        row["int8_finite"] = bool(np.isfinite(got).all())
        rms_int8 = float(np.sqrt(np.mean((got - optimized) ** 2)))
        rms_exact = float(np.sqrt(np.mean((exact - optimized) ** 2)))
        row.update(int8_rms=rms_int8, exact_rms=rms_exact, ratio=rms_int8 / rms_exact if rms_exact else None,
                   relative_rms=rms_int8 / float(np.sqrt(np.mean(optimized ** 2))))
        row["stage"] = "timing"
        for batch in BATCHES:
            x = np.concatenate([evaluation] * -(-batch // len(evaluation)))[:batch]
            calls = {name: (lambda run=run: run(x)) for name, run in runners.items()}
            timings = {name: summarize_times(batch, s) for name, s in
                       time_interleaved(calls, runs, warmup=2, rounds=min(5, runs)).items()}
            row[f"fp32_ms_b{batch}"], row[f"int8_ms_b{batch}"] = timings["fp32"].median_ms, timings["int8"].median_ms
    finally:
        for run in runners.values():
            run.close()
    row["stage"] = "done"
    return row


def graph_counts(result) -> dict:
    """int8 ops by type, fp32 borders, and the fp32 convolutions / matmuls left, each with why."""
    from kquant.quantization.model import INT8_OP_PREFIXES

    ops = collections.Counter(n.op for n in result.int8.graph_def.node)
    int8 = {op: n for op, n in ops.items() if op.startswith(INT8_OP_PREFIXES) and op not in ("QuantizeV2", "Dequantize")}
    emitted = {u.anchor for u in result.units}
    planned = {u.anchor for u in result.prepared.planned}
    left = []
    for node in result.int8.graph_def.node:
        if node.op not in WEIGHTED:
            continue
        if node.name in result.stems:
            why = "image stem (stem='fp32')"
        elif node.name in result.fell_back:
            why = "kept fp32 by tuning"
        elif node.name in planned and node.name not in emitted:
            why = "the rewrite kept its unit fp32"
        elif node.op in ("BatchMatMulV2", "Einsum"):
            why = f"{node.op}: no int8 kernel"
        else:
            why = "no unit pattern matches it (non-constant or transposed weights)"
        left.append({"name": node.name, "op": node.op, "why": why})
    kinds = collections.Counter(u.family for u in result.units)
    fp32_ops = collections.Counter(n.op for n in result.int8.graph_def.node if n.op not in int8 and n.op not in
                                   ("Const", "Placeholder", "Identity", "QuantizeV2", "Dequantize"))
    return {"int8_ops": sum(int8.values()), "int8_op_types": int8, "units": dict(kinds),
            "quantize_v2": ops.get("QuantizeV2", 0), "dequantize": ops.get("Dequantize", 0),
            "fp32_weighted_left": left, "fp32_ops": dict(fp32_ops)}


def freeze_row(arch: str, keras_version: str, side: int, out: Path) -> None:
    """Build the Keras model, its images and reference outputs, freeze it, and write them to ``out``. Run in a process
    of its own: what Keras keeps after a big model (ConvNeXtXLarge's 1.4 GiB of weights, several times over) is
    then gone before the row quantizes."""
    import numpy as np

    import kquant

    start = time.perf_counter()
    model, preprocess = build_model(arch, keras_version, side)
    rng = np.random.default_rng(0)
    images = preprocess(rng.uniform(0, 255, (CALIBRATION_IMAGES + EVAL_IMAGES, side, side, 3)).astype(np.float32))
    images = np.asarray(images, np.float32)
    evaluation = images[CALIBRATION_IMAGES:]
    reference = np.asarray(model.predict(evaluation, verbose=0), np.float64)
    build_s = time.perf_counter() - start
    # what the fp32 bound can mean for this model: Keras against itself, one image at a time instead of a batch
    single = np.concatenate([np.asarray(model(evaluation[i:i + 1], training=False)) for i in range(len(evaluation))])
    keras_batch_error = float(np.abs(single - reference).max() / np.abs(reference).max())
    kquant.freeze(model).save(out / "frozen.pb")
    np.savez(out / "data.npz", calibration=images[:CALIBRATION_IMAGES], evaluation=evaluation, reference=reference,
             build_s=build_s, keras_batch_error=keras_batch_error)


def worker(arch, keras_version, side, runs, path: Path) -> None:
    """Measure one row and write it to ``path`` (a failure is written as a row with its error)."""
    row = {"arch": arch, "keras": keras_version, "size": side}
    try:
        row = measure(arch, keras_version, side, runs)
    except Exception as exc:  # noqa: BLE001 - the row records any failure
        row.update(error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500],
                   traceback=traceback.format_exc()[-3000:])
    write_row(path, row)


def write_row(path: Path, row: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(row, indent=1) + "\n")
    tmp.replace(path)


def sweep(rows, out: Path, size: str, runs: int, timeout: int) -> None:
    """Each row not yet in ``out`` in a child process with ``timeout`` seconds."""
    for arch, keras_version in rows:
        path = out / f"{arch}-keras{keras_version}.json"
        if path.exists():
            continue
        side = input_size(arch, size)
        row_runs = max(2, runs // 4) if arch in BIG else runs
        print(f"{datetime.datetime.now():%H:%M:%S} {arch} keras {keras_version} {side}x{side}", flush=True)
        start = time.perf_counter()
        command = [sys.executable, __file__, "--row", arch, "--keras", keras_version, "--size", str(side),
                   "--runs", str(row_runs), "--out", str(out)]
        try:
            done = subprocess.run(command, timeout=timeout, capture_output=True, text=True, env=ROW_ENVIRONMENT)
            if not path.exists():
                write_row(path, {"arch": arch, "keras": keras_version, "size": side,
                                 "error": f"the process died (exit {done.returncode}): {_last_line(done.stderr)}"})
        except subprocess.TimeoutExpired:
            write_row(path, {"arch": arch, "keras": keras_version, "size": side, "error": f"timed out after {timeout} s"})
        row = json.loads(path.read_text())
        row["wall_s"] = time.perf_counter() - start
        write_row(path, row)
        print(f"    {row.get('error') or 'ok'} ({row['wall_s']:.0f} s)", flush=True)


def _last_line(text: str) -> str:
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def report(out: Path, command: str) -> str:
    """ZOO.md: every row in ``out``, then per architecture what stays fp32 and why."""
    rows = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    order = {arch: i for i, arch in enumerate(ARCHITECTURES)}
    rows.sort(key=lambda r: (order.get(r["arch"], 99), r["keras"]))
    ok = [r for r in rows if r.get("stage") == "done"]
    flags = _cpu_flags()
    lines = [
        "# kquant on every keras.applications architecture",
        "",
        f"Measured {datetime.date.today()} on {flags}, TensorFlow's 2 threads, on a machine shared with other jobs "
        "(speed-ups move between runs). Rows: `nice python benchmarks/zoo.py --runs 10` (one process per row; the "
        f"big models timed with 2 runs); table: `{command}`.",
        "Random weights (weights=None), the smallest input each architecture accepts, logits out; calibrated on "
        f"{CALIBRATION_IMAGES} preprocessed random images, errors on {EVAL_IMAGES} others. "
        f"{len(ok)} of {len(rows)} rows measured quantize and run.",
        "",
        "Columns: fp32 err = the optimized fp32 graph's max |error| / max |Keras output| (bound 1e-4); int8 ops = "
        "quantized compute ops (QuantizeV2 / Dequantize at fp32 borders after the slash); fp32 conv/mm = "
        "convolutions and matmuls left fp32; int8/exact = the int8 RMS error against fp32 divided by the exact 8-bit "
        "simulation's (1.0: as good as exact rounding of the same plan); rel RMS = int8 RMS error / RMS of the "
        "fp32 output; speed-up = fp32 time / int8 time per call (median, interleaved rounds).",
        "",
        "| architecture | Keras | input | fp32 err | int8 ops (Q/DQ) | fp32 conv/mm | int8/exact | rel RMS "
        "| speed-up b1 | speed-up b32 | quantize s | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.get("stage") != "done":
            status = r.get("error") or f"stopped at {r.get('stage')}"
            lines.append(f"| {r['arch']} | {r['keras']} | {r['size']} | " + "| " * 8 + f"{status} |")
            continue
        noise = r.get("keras_batch_error", 0.0)
        fp32_status = ("" if r["fp32_max_rel_error"] <= FP32_BOUND else
                       f"fp32 error over 1e-4, as is Keras's own (batch 1 against 8: {noise:.1e}; chaotic random "
                       "weights); " if noise > FP32_BOUND else "fp32 error over 1e-4; ")
        lines.append(
            f"| {r['arch']} | {r['keras']} | {r['size']} | {r['fp32_max_rel_error']:.1e} | {r['int8_ops']} "
            f"({r['quantize_v2']}/{r['dequantize']}) | {len(r['fp32_weighted_left'])} | "
            f"{_num(r['ratio'])} | {_num(r['relative_rms'], '.3f')} | {r['fp32_ms_b1'] / r['int8_ms_b1']:.2f}× | "
            f"{r['fp32_ms_b32'] / r['int8_ms_b32']:.2f}× | {r['quantize_s']:.0f} | "
            f"{fp32_status}{'ok' if r['int8_finite'] else 'int8 output not finite'} |")
    done = {(r["arch"], r["keras"]) for r in rows}
    missing = [f"{a} (Keras {k})" for a in ARCHITECTURES for k in KERASES if (a, k) not in done]
    if missing:
        lines += ["", f"Not run yet ({len(missing)}): {', '.join(missing)}."]
    lines += ["", "## What stays fp32, per architecture", "",
              "TF's int8 kernels are convolutions and matmuls (fusing a bias, Relu and a residual sum; matmuls "
              "also Sigmoid, Tanh, Elu, LeakyRelu and GELU), pools, concat, reshape and bilinear resize: every other "
              "op runs fp32 "
              "between a Dequantize and a QuantizeV2. The ops left fp32 in each int8 graph (the Keras 3 row where it "
              "ran, else tf_keras), then what they are:", ""]
    for arch in dict.fromkeys(r["arch"] for r in ok):
        r = sorted((r for r in ok if r["arch"] == arch), key=lambda r: r["keras"] != "3")[0]
        reasons = collections.Counter(f"{w['op']} ({w['why']})" for w in r["fp32_weighted_left"])
        left = ", ".join(f"{n} {why}" for why, n in reasons.items()) or "none"
        ops = ", ".join(f"{n} {op}" for op, n in sorted(r["fp32_ops"].items(), key=lambda kv: -kv[1]))
        lines.append(f"- **{arch}** (Keras {r['keras']}): convolutions/matmuls: {left}; other ops: {ops}.")
    lines += ["", "| fp32 op | where it comes from |", "|---|---|"]
    lines += [f"| {op} | {why} |" for op, why in FP32_WHY.items()]
    return "\n".join(lines) + "\n"


def _num(value, fmt=".2f") -> str:
    return "" if value is None else format(value, fmt)


def _cpu_flags() -> str:
    try:
        info = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return "an unknown CPU"
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    flags = fields.get("Flags", "").split()
    simd = [f for f in flags if f.startswith(("avx", "amx", "fma", "sse4", "f16c"))] or ["no AVX"]
    return (f"{fields.get('Model name', 'CPU').strip()}, {os.cpu_count()} cores, {' '.join(sorted(simd))} "
            f"({'VNNI' if any('vnni' in f for f in flags) else 'no VNNI'})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default=",".join(ARCHITECTURES), help="comma-separated architectures (default: all 40)")
    parser.add_argument("--keras", default="both", choices=("3", "2", "both"), help="Keras 3, tf_keras (2) or both")
    parser.add_argument("--size", default="min", help="input side: 'min' (each architecture's smallest) or a number")
    parser.add_argument("--runs", type=int, default=10, help="timed calls per graph and batch size (a quarter for big models)")
    parser.add_argument("--out", type=Path, default=HERE / "zoo_results", help="folder of one JSON per row")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds one row may take")
    parser.add_argument("--report", type=Path, help="write the table of every row in --out to this Markdown file")
    parser.add_argument("--row", help=argparse.SUPPRESS)  # the child process measuring one row
    parser.add_argument("--freeze-row", help=argparse.SUPPRESS)  # its child building and freezing the Keras model
    args = parser.parse_args(argv)
    if args.freeze_row:
        return freeze_row(args.freeze_row, args.keras, int(args.size), args.out)
    if args.row:
        worker(args.row, args.keras, int(args.size), args.runs, args.out / f"{args.row}-keras{args.keras}.json")
        return
    archs = args.archs.split(",")
    unknown = [a for a in archs if a not in ARCHITECTURES]
    if unknown:
        parser.error(f"unknown architectures {', '.join(unknown)}; choose from {', '.join(ARCHITECTURES)}")
    kerases = ("3", "2") if args.keras == "both" else (args.keras,)
    if args.report:
        args.report.write_text(report(args.out, "python benchmarks/zoo.py " + " ".join(argv or sys.argv[1:])))
        return
    sweep([(a, k) for a in archs for k in kerases], args.out, args.size, args.runs, args.timeout)


if __name__ == "__main__":
    main()
