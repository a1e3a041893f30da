"""Peak memory of calibration: a small CNN calibrated on 1k and 10k samples, as batches or as one array.

    python benchmarks/calibration_memory.py [--samples 1000,10000] [--methods minmax,percentile,kl]

Each case runs in its own subprocess, which builds the model, reads its peak RSS (VmHWM in /proc/self/status),
quantizes, and reads it again. Data handed over as a generator of 64-sample batches never exists in full;
one big array does (10k 28×28×1 float32 images are 31 MB). kquant's calibrators keep a fixed amount of state
per tensor, so with batches the peak should not grow with the number of samples. Prints a Markdown table
(the one in benchmarks/RESULTS_MEMORY.md).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

BATCH = 64
SHAPE = (28, 28, 1)


def small_cnn():
    import keras

    layers = keras.layers
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input(SHAPE, name="image"), layers.Conv2D(16, 3, activation="relu"), layers.MaxPooling2D(),
                             layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(), layers.Flatten(),
                             layers.Dense(64, activation="relu"), layers.Dense(10)])


def peak_rss_mb() -> float:
    """VmHWM: the most resident memory this process has had, in MB."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def batches(samples: int):
    """``samples`` images in batches of BATCH, each made when asked for."""
    import numpy as np

    rng = np.random.default_rng(0)
    for start in range(0, samples, BATCH):
        yield rng.random((min(BATCH, samples - start), *SHAPE), dtype=np.float32)


def run_case(samples: int, form: str, method: str) -> dict:
    """One measurement, in this process: peak RSS before and after quantize, and its time."""
    import numpy as np

    import kquant

    frozen = kquant.freeze(small_cnn())
    kquant.quantize(frozen, next(batches(BATCH)), progress=False)  # warm up: TF sessions, kernels, caches
    before = peak_rss_mb()
    data = batches(samples) if form == "generator" else np.random.default_rng(0).random((samples, *SHAPE), dtype=np.float32)
    start = time.perf_counter()
    kquant.quantize(frozen, data, calibration=method, batch_size=BATCH, progress=False,
                    max_batches=-(-samples // BATCH))  # every sample, past the default limit
    return {"samples": samples, "form": form, "method": method, "before_mb": before, "peak_mb": peak_rss_mb(),
            "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", default="1000,10000", help="comma-separated sample counts")
    parser.add_argument("--methods", default="minmax,percentile,kl", help="comma-separated calibration methods")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # samples,form,method: measure one case in this process
    args = parser.parse_args()
    if args.case:
        samples, form, method = args.case.split(",")
        print(json.dumps(run_case(int(samples), form, method)))
        return
    print("| method | data | samples | peak RSS before | peak RSS after | growth | time |")
    print("|---|---|---|---|---|---|---|")
    for method in args.methods.split(","):
        for form in ("generator", "array"):
            for samples in args.samples.split(","):
                output = subprocess.run([sys.executable, __file__, "--case", f"{samples},{form},{method}"],
                                        capture_output=True, text=True, check=True).stdout
                r = json.loads(output.strip().splitlines()[-1])
                print(f"| {method} | {form} | {r['samples']} | {r['before_mb']:.0f} MB | {r['peak_mb']:.0f} MB | "
                      f"{r['peak_mb'] - r['before_mb']:+.0f} MB | {r['seconds']:.1f} s |", flush=True)


if __name__ == "__main__":
    main()
