"""What the pre-flight child process (kquant.preflight) adds to quantize time: fer on 100 real faces and the
Fashion-MNIST CNN on 1000 real images, with KQUANT_PREFLIGHT on and off, interleaved. The first call with it on
also starts the child process (a TensorFlow start-up), which later calls in the process reuse.

    python benchmarks/preflight.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import time
from pathlib import Path

import kquant
from kquant import datasets


def fashion_cnn():
    path = Path(__file__).resolve().parents[1] / "examples" / "keras" / "fashion_mnist_cnn.py"
    spec = importlib.util.spec_from_file_location("fashion_mnist_cnn", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model, (x, _), _ = module.train(train_samples=5000, epochs=1)
    return model, x[:1000]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cases = {"fer (100 faces)": (datasets.fer_model_path(), datasets.lfw_faces()[:100]), "Fashion CNN (1000 images)": fashion_cnn()}
    times = {(name, on): [] for name in cases for on in ("1", "0")}
    for _ in range(args.repeats):
        for name, (model, x) in cases.items():
            for on in ("1", "0"):
                os.environ["KQUANT_PREFLIGHT"] = on
                start = time.perf_counter()
                kquant.quantize(model, x, progress=False)
                times[name, on].append(time.perf_counter() - start)
    first = next(iter(cases))
    print(f"first quantize with the pre-flight on ({first}, starts the child): {times[first, '1'][0]:.2f} s")
    print("| model | quantize, pre-flight on (s) | off (s) | added (s) |\n|---|---|---|---|")
    for name in cases:
        on, off = statistics.median(times[name, "1"][1:] or times[name, "1"]), statistics.median(times[name, "0"])
        print(f"| {name} | {on:.2f} | {off:.2f} | {on - off:+.2f} |")


if __name__ == "__main__":
    main()
