"""Peak memory of quantizing a big keras.applications model: the process and kquant's pre-flight child together.

    python benchmarks/quantize_memory.py [--arch ConvNeXtBase] [--side 32]

A first process builds the model (random weights), freezes it and saves the frozen graph, so that what Keras
needs to build a model is not counted; a second one quantizes that .pb on 8 random images while a thread samples
the resident memory (/proc/PID/statm) of the process and of its children every 50 ms. Prints one line: the
weights' size, the peaks (this process, the child, both at once) and the quantize time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GIB = 2 ** 30


def resident(pid: int) -> float:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / GIB
    except OSError:
        return 0.0


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
        except (OSError, IndexError, ValueError):
            pass
    return found


def save_frozen(arch: str, side: int, path: str) -> None:
    sys.path.insert(0, str(HERE))
    import kquant
    from zoo import build_model

    model, _ = build_model(arch, "3", side)
    print(sum(w.numpy().nbytes for w in model.weights) / GIB)
    kquant.freeze(model).save(path)


def quantize(path: str, side: int) -> None:
    import numpy as np

    import kquant

    peaks = {"process": 0.0, "child": 0.0, "both": 0.0}

    def sample():
        me = os.getpid()
        while True:
            own, child = resident(me), sum(resident(pid) for pid in children(me))
            peaks.update(process=max(peaks["process"], own), child=max(peaks["child"], child),
                         both=max(peaks["both"], own + child))
            time.sleep(0.05)

    threading.Thread(target=sample, daemon=True).start()
    x = np.random.default_rng(0).uniform(-1, 1, (8, side, side, 3)).astype(np.float32)
    start = time.perf_counter()
    kquant.quantize(path, x, batch_size=8, progress=False)
    seconds = time.perf_counter() - start
    time.sleep(0.2)
    print(f"{peaks['process']:.2f} {peaks['child']:.2f} {peaks['both']:.2f} {seconds:.0f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="ConvNeXtBase")
    parser.add_argument("--side", type=int, default=32)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    parser.add_argument("--quantize", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE.parent))  # this checkout's kquant
    if args.save:
        return save_frozen(args.arch, args.side, args.save)
    if args.quantize:
        return quantize(args.quantize, args.side)
    with tempfile.TemporaryDirectory() as tmp:
        pb = str(Path(tmp) / "frozen.pb")
        run = [sys.executable, __file__, "--arch", args.arch, "--side", str(args.side)]
        weights = float(subprocess.run(run + ["--save", pb], check=True, capture_output=True, text=True).stdout.split()[-1])
        own, child, both, seconds = subprocess.run(run + ["--quantize", pb], check=True, capture_output=True,
                                                   text=True).stdout.split()[-4:]
    print(f"{args.arch} {args.side}x{args.side}: weights {weights:.2f} GiB; peak resident memory during quantize: "
          f"process {own} GiB, pre-flight child {child} GiB, both {both} GiB; quantize {seconds} s")


if __name__ == "__main__":
    main()
