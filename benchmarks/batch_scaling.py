"""From which batch size kquant's int8 graph outruns its fp32 graph: time per call over a range of batch sizes.

    python benchmarks/batch_scaling.py [--models fashion_cnn,wide_deep,fer,resnet20] [--batches 1,8,32,128,512] [--runs 40]

For each model of benchmarks/compare.py (built, calibrated and quantized the same way): the median time
per call of the optimized fp32 graph and the int8 graph at each batch size, timed in interleaved rounds
by `kquant.benchmark.benchmark` on the model's evaluation rows, and int8's speed-up (fp32 time / int8
time). At batch 1 a call is mostly TensorFlow's per-op overhead, which int8 does not shrink; the larger
the batch, the larger the share of the kernels, the only part int8 makes faster.
"""

from __future__ import annotations

import argparse

import kquant
from kquant.benchmark import benchmark

MODELS = ("fashion_cnn", "wide_deep", "fer", "resnet20")
BATCHES = (1, 8, 32, 128, 512)


def measure(name, batches, runs) -> dict:
    """{batch: (fp32 ms, int8 ms)} for one model of compare.py."""
    import compare

    _, model, calibration, x_eval, _ = getattr(compare, name)()
    int8 = kquant.quantize(model, calibration, progress=False)
    rows = max(batches)
    data = {k: v[:rows] for k, v in x_eval.items()} if isinstance(x_eval, dict) else x_eval[:rows]
    report = benchmark(model, int8, batches=batches, runs=runs, data=data, progress=False)
    fp32, quantized = report.variants["fp32"].timings, report.variants["int8"].timings
    return {batch: (fp32[batch].median_ms, quantized[batch].median_ms) for batch in batches}


def table(results, batches) -> str:
    lines = ["| model | " + " | ".join(f"batch {b}: fp32 / int8 ms (speed-up)" for b in batches) + " |",
             "|---|" + "---|" * len(batches)]
    for name, times in results.items():
        cells = [f"{times[b][0]:.3f} / {times[b][1]:.3f} ({times[b][0] / times[b][1]:.2f}×)" for b in batches]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}")
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)), help="comma-separated batch sizes")
    parser.add_argument("--runs", type=int, default=40, help="timed calls per graph and batch size (default 40)")
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    results = {name: measure(name, batches, args.runs) for name in args.models.split(",")}
    print(table(results, batches))


if __name__ == "__main__":
    main()
