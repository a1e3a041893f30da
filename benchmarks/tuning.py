"""Accuracy-aware quantization on real data: trials, time and result for `fer` and the Adult Wide & Deep.

    python benchmarks/tuning.py [--max-accuracy-drop 0.005] [--fallback fp32|bf16] [--models fer,wide_deep]

The search scores candidates on data it may see (fer: the 100 calibration faces; Wide & Deep: 3000
training rows held out of training); the result is then scored on data it never saw (fer: the other 100 faces;
Wide & Deep: the test set). For each tuned model it also prints the batch-32 latency of the result
(median of 50 calls).
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import numpy as np

import kquant
from kquant import datasets
from kquant.benchmark import time_interleaved


def tune_fer(max_drop, fallback):
    import keras

    faces = datasets.lfw_faces()
    path = datasets.fer_model_path()
    reference = keras.models.load_model(path, compile=False).predict(faces, verbose=0).argmax(1)

    def agreement(rows):
        return lambda predict: float(np.mean(predict(faces[rows]).argmax(1) == reference[rows]))

    start = time.perf_counter()
    qmodel = kquant.quantize(path, faces[:100], eval_fn=agreement(slice(0, 100)), max_accuracy_drop=max_drop,
                             fallback=fallback, progress=False)
    report("fer (agreement with fp32; searched on the 100 calibration faces, scored on the 100 others)", qmodel,
           time.perf_counter() - start, 1.0, agreement(slice(100, 200))(qmodel.predict), [faces[:32]])


def tune_wide_deep(max_drop, fallback):
    spec = importlib.util.spec_from_file_location("wide_deep", Path(__file__).parent.parent / "examples/keras/wide_deep_adult.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    model, (x, y), (xt, yt) = example.train(train_rows=-3000)  # the last 3000 training rows stay out of training
    held_back = {k: v[-3000:] for k, v in x.items()}

    def accuracy(data, labels):
        return lambda predict: float(np.mean((predict(data)[:, 0] > 0.5) == labels))

    fp32 = accuracy(xt, yt)(lambda data: model.predict(data, verbose=0))
    start = time.perf_counter()
    qmodel = kquant.quantize(model, {k: v[:2000] for k, v in x.items()}, eval_fn=accuracy(held_back, y[-3000:]),
                             max_accuracy_drop=max_drop, fallback=fallback, progress=False)
    report("Adult Wide & Deep (accuracy; searched on 3000 held-back training rows, scored on the test set)", qmodel,
           time.perf_counter() - start, fp32, accuracy(xt, yt)(qmodel.predict),
           [xt[name.split(":")[0]][:32] for name in qmodel.graph.input_names])


def report(name, qmodel, seconds, fp32, int8, batch):
    kept = len(qmodel.result.fell_back)
    with kquant.GraphRunner(qmodel.graph_def, qmodel.graph.input_names, qmodel.graph.output_names) as run:
        times = time_interleaved({"int8": lambda: run(*batch)}, 50)["int8"]
    print(f"{name}: {len(qmodel.trials)} trials in {seconds:.1f} s; fp32 {fp32:.4f}, tuned int8 {int8:.4f} (unseen data); "
          f"{kept} op(s) kept out of int8 ({qmodel.result.fallback}); batch-32 latency {1000 * np.median(times):.2f} ms")
    for trial in qmodel.trials:
        print(f"  {trial}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-accuracy-drop", type=float, default=0.005)
    parser.add_argument("--fallback", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--models", default="fer,wide_deep")
    args = parser.parse_args(argv)
    for model in args.models.split(","):
        {"fer": tune_fer, "wide_deep": tune_wide_deep}[model](args.max_accuracy_drop, args.fallback)


if __name__ == "__main__":
    main()
