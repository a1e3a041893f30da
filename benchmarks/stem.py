"""What keeping the image stem fp32 (kquant's default) costs and buys against quantizing it (stem="int8").

    python benchmarks/stem.py [--models fashion_cnn,fer,resnet20] [--runs 200] [--repeats 3]

For each conv model of benchmarks/compare.py (built the same way): accuracy (fer: top-1 agreement with
the fp32 graph on its 100 unseen faces) of both int8 graphs, then median latency in ms of the fp32 graph
and both int8 graphs at batch 32 and batch 1, timed in interleaved rounds in one process; the timing is
repeated ``repeats`` times because on a shared machine one repeat moves by more than the difference.
"""

from __future__ import annotations

import argparse

import numpy as np

import kquant
from kquant.benchmark import time_interleaved
from kquant.quantization import pipeline
from kquant.runtime import GraphRunner

MODELS = ("fashion_cnn", "fer", "resnet20")
EVAL_BATCH = 500


def measure(name, runs, repeats):
    import compare

    _, model, calibration, x_eval, labels = getattr(compare, name)()
    frozen = kquant.freeze(model)
    fp32 = pipeline.optimize(frozen)
    graphs = {"fp32": fp32.graph_def,
              "stem int8": kquant.quantize(frozen, calibration, stem="int8", progress=False).graph_def,
              "stem fp32": kquant.quantize(frozen, calibration, progress=False).graph_def}
    runners = {variant: GraphRunner(g, fp32.input_names, fp32.output_names[:1]) for variant, g in graphs.items()}
    try:
        outputs = {variant: np.concatenate([run(x_eval[i:i + EVAL_BATCH])[0] for i in range(0, len(x_eval), EVAL_BATCH)])
                   for variant, run in runners.items()}
        truth = labels if labels is not None else outputs["fp32"].argmax(1)
        scores = {variant: 100 * np.mean(out.argmax(1) == truth) for variant, out in outputs.items() if variant != "fp32"}
        print(f"{name}: {'accuracy' if labels is not None else 'agreement'} "
              + ", ".join(f"{variant} {score:.2f} %" for variant, score in scores.items()))
        for batch in (32, 1) * repeats:
            x = x_eval[:batch]
            times = time_interleaved({variant: (lambda run=run, x=x: run(x)) for variant, run in runners.items()}, runs)
            print(f"  batch {batch:2d} median ms: "
                  + ", ".join(f"{variant} {1e3 * float(np.median(t)):.3f}" for variant, t in times.items()))
    finally:
        for run in runners.values():
            run.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}")
    parser.add_argument("--runs", type=int, default=200, help="timed calls per variant, batch size and repeat")
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats per batch size (default 3)")
    args = parser.parse_args(argv)
    for name in args.models.split(","):
        measure(name, args.runs, args.repeats)


if __name__ == "__main__":
    main()
