"""Where an int8 graph spends its time: op counts, per-op-type time (TF step stats), oneDNN primitives (ONEDNN_VERBOSE).

    python benchmarks/profile_int8.py [--models fer,fashion_cnn,resnet20] [--batch 1,32] [--runs 20] [--perf 6]

For each model (built as benchmarks/compare.py builds it): the fp32 and int8 op histograms and the
Dequantize -> QuantizeV2 round trips left between int8 ops; the median time per op type over ``runs``
traced calls (TF's executor, after the oneDNN layout pass, so _Mkl* names show what runs); and the
oneDNN primitives of one int8 call, read from ONEDNN_VERBOSE=1 in a subprocess (which TensorFlow needs:
oneDNN reads the variable once): kind, implementation (jit:avx2, ref, ...), count and time, reorders included.
With ``--perf SECONDS`` (needs Linux ``perf``): where the CPU time of a loop of calls goes, by library, for
the fp32 and the int8 graph: oneDNN's JIT-compiled kernels (what int8 speeds up), the OS kernel
(thread wake-ups), TensorFlow's framework (executor, thread pool) and its op library.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MARKER = "profile_int8: timed calls start"
PERF_GROUPS = (("[JIT]", "oneDNN JIT kernels"), ("kernel", "OS kernel"), ("libtensorflow_framework", "TF framework"),
               ("libtensorflow_cc", "TF ops"))


def op_histogram(graph_def) -> collections.Counter:
    return collections.Counter(n.op for n in graph_def.node if n.op != "Const")


def round_trips(graph_def) -> int:
    """QuantizeV2 nodes whose input is a Dequantize: int8 -> fp32 -> int8 with nothing in between."""
    from kquant.graphdef import node_name, nodes_by_name

    by_name = nodes_by_name(graph_def)
    return sum(1 for n in graph_def.node if n.op == "QuantizeV2" and by_name[node_name(n.input[0])].op == "Dequantize")


def fp32_islands(graph_def) -> collections.Counter:
    """fp32 compute ops that read a Dequantize: where the int8 graph leaves int8 and why."""
    from kquant.graphdef import is_control_input, node_name, nodes_by_name

    by_name = nodes_by_name(graph_def)
    readers = collections.Counter()
    for node in graph_def.node:
        if node.op in ("QuantizeV2", "Identity"):
            continue
        if any(by_name[node_name(i)].op == "Dequantize" for i in node.input if not is_control_input(i)):
            readers[node.op] += 1
    return readers


def op_times(graph_def, inputs, outputs, arrays, runs) -> dict:
    """Median microseconds per call, summed by the op type TensorFlow ran (step stats of traced calls)."""
    import tensorflow as tf

    import kquant

    runner = kquant.GraphRunner(graph_def, inputs, outputs)
    feed = dict(zip(inputs, arrays))
    options = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
    samples = collections.defaultdict(list)
    for _ in range(3):
        runner.session.run(outputs, feed)
    for _ in range(runs):
        metadata = tf.compat.v1.RunMetadata()
        runner.session.run(outputs, feed, options=options, run_metadata=metadata)
        per_type = collections.Counter()
        for device in metadata.step_stats.dev_stats:
            for stats in device.node_stats:
                match = re.match(r"[^=]+=\s*([\w]+)\(", stats.timeline_label)
                if match and stats.node_name != "_SOURCE":
                    per_type[match.group(1)] += stats.op_end_rel_micros - stats.op_start_rel_micros
        for op, micros in per_type.items():
            samples[op].append(micros)
    runner.close()
    return {op: statistics.median(v + [0] * (runs - len(v))) for op, v in samples.items()}


def onednn_primitives(graph_path, batch, runs) -> list:
    """(kind, implementation, calls per graph call, ms per graph call) from ONEDNN_VERBOSE=1, slowest first."""
    env = {**os.environ, "ONEDNN_VERBOSE": "1", "TF_ENABLE_ONEDNN_OPTS": "1"}
    result = subprocess.run([sys.executable, __file__, "--verbose-child", str(graph_path), "--batch", str(batch), "--runs", str(runs)],
                            capture_output=True, text=True, env=env, check=True)
    lines = result.stdout.split(MARKER, 1)[1].splitlines()
    totals = collections.defaultdict(lambda: [0, 0.0])
    for line in lines:
        fields = line.split(",")
        if len(fields) > 6 and fields[0] == "onednn_verbose" and fields[2] == "primitive" and fields[3] == "exec":
            kind, impl = fields[5], fields[6]
            if kind == "reorder":
                kind = "reorder " + " -> ".join(m.split(":")[1] for m in fields[8].split()[:2])
            totals[(kind, impl)][0] += 1
            totals[(kind, impl)][1] += float(fields[-1])
    return sorted(((k, i, n / runs, ms / runs) for (k, i), (n, ms) in totals.items()), key=lambda row: -row[3])


def verbose_child(graph_path, batch, runs, seconds=0.0):
    """Call the graph ``runs`` times after MARKER, or for ``seconds`` when given."""
    import time

    import kquant

    frozen = kquant.freeze(graph_path)
    arrays = [np.zeros((batch, *s.shape[1:]), s.dtype) for s in frozen.inputs]
    with kquant.GraphRunner(frozen.graph_def, frozen.input_names, frozen.output_names) as runner:
        for _ in range(3):
            runner(*arrays)
        print(MARKER, flush=True)
        end = time.perf_counter() + seconds
        calls = 0
        while calls < runs or time.perf_counter() < end:
            runner(*arrays)
            calls += 1
    sys.stdout.flush()


def cpu_shares(graph_path, batch, seconds) -> dict:
    """Percent of ``perf record`` samples by library while a child process calls the graph in a loop."""
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "1"}
    child = subprocess.Popen([sys.executable, __file__, "--verbose-child", str(graph_path), "--batch", str(batch),
                              "--seconds", str(seconds + 30)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        while MARKER not in child.stdout.readline():
            pass
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "perf.data"
            subprocess.run(["perf", "record", "-q", "-F", "1999", "-p", str(child.pid), "-o", str(data), "--", "sleep", str(seconds)],
                           check=True, capture_output=True)
            report = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--sort", "dso"],
                                    check=True, capture_output=True, text=True).stdout
    finally:
        child.kill()
        child.wait()
    shares = collections.Counter()
    for line in report.splitlines():
        match = re.match(r"\s*([\d.]+)%\s+(.+?)\s*$", line)
        if match:
            library = match.group(2)
            group = next((label for key, label in PERF_GROUPS if key in library), "other")
            shares[group] += float(match.group(1))
    return shares


def profile(name, batches, runs, perf_seconds=0):
    import compare

    import kquant
    from kquant.transforms import optimize_for_inference

    _, model, calibration, eval_data, _ = getattr(compare, name)()
    frozen = kquant.freeze(model)
    fp32 = optimize_for_inference(frozen)
    qmodel = kquant.quantize(frozen, calibration, progress=False)
    columns = compare._columns(eval_data, fp32)
    print(f"## {name}\n")
    for label, graph_def in (("fp32", fp32.graph_def), ("int8", qmodel.graph_def)):
        ops = op_histogram(graph_def)
        print(f"{label} ops ({sum(ops.values())} non-Const): " + ", ".join(f"{n} {op}" for op, n in ops.most_common()))
    print(f"Dequantize -> QuantizeV2 round trips: {round_trips(qmodel.graph_def)}; fp32 ops reading a Dequantize: "
          + (", ".join(f"{n} {op}" for op, n in fp32_islands(qmodel.graph_def).most_common()) or "none"))
    for batch in batches:
        arrays = [compare._rows(c, batch) for c in columns]
        graphs = (("fp32", fp32), ("int8", qmodel.graph))
        times = {label: op_times(g.graph_def, g.input_names, g.output_names, arrays, runs) for label, g in graphs}
        print(f"\nBatch {batch}, median over {runs} traced calls:\n\n| op type run | fp32 µs/call | int8 µs/call |\n|---|---|---|")
        for op in sorted(set(times["fp32"]) | set(times["int8"]), key=lambda o: -max(times["fp32"].get(o, 0), times["int8"].get(o, 0))):
            print(f"| {op} | {times['fp32'].get(op, 0):.0f} | {times['int8'].get(op, 0):.0f} |")
        print(f"| total (sum of op times) | {sum(times['fp32'].values()):.0f} | {sum(times['int8'].values()):.0f} |")
        with tempfile.TemporaryDirectory() as tmp:
            rows = onednn_primitives(qmodel.save(Path(tmp) / "int8.pb"), batch, runs)
        print(f"\noneDNN primitives per int8 call at batch {batch} (ONEDNN_VERBOSE=1):\n\n"
              "| primitive | implementation | calls | ms |\n|---|---|---|---|")
        for kind, impl, calls, ms in rows:
            print(f"| {kind} | {impl} | {calls:g} | {ms:.3f} |")
        if perf_seconds:
            groups = [label for _, label in PERF_GROUPS] + ["other"]
            print(f"\nCPU samples by library, batch {batch}, {perf_seconds} s of calls (perf record):\n\n"
                  f"| graph | {' | '.join(groups)} |\n|---{'|---' * len(groups)}|")
            with tempfile.TemporaryDirectory() as tmp:
                for label, graph in (("fp32", fp32), ("int8", qmodel.graph)):
                    shares = cpu_shares(graph.save(Path(tmp) / f"{label}.pb"), batch, perf_seconds)
                    print(f"| {label} | {' | '.join(f'{shares[g]:.1f} %' for g in groups)} |")
    print()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="fer,fashion_cnn,resnet20")
    parser.add_argument("--batch", default="1,32", help="comma-separated batch sizes (the child takes one)")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--perf", type=float, default=0, metavar="SECONDS",
                        help="also sample each graph's calls with Linux perf for this long (default: off)")
    parser.add_argument("--verbose-child", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if args.verbose_child:
        verbose_child(args.verbose_child, int(args.batch), args.runs, args.seconds)
        return
    for name in args.models.split(","):
        profile(name, [int(b) for b in args.batch.split(",")], args.runs, args.perf)


if __name__ == "__main__":
    main()
