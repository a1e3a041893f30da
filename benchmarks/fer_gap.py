"""Where fer's int8 agreement stands against exact 8-bit arithmetic: a fake-quant simulation of the same plan.

    python benchmarks/fer_gap.py

Two folds of scikit-image's 200 LFW faces (calibrate on one half, evaluate on the other). For each:
- "exact 8-bit": `kquant.quantization.simulation` on kquant's plan and calibrated ranges: int8-rounded
  weights and an asymmetric FakeQuant at every quantized tensor, i.e. exact rounding, no kernel effects;
- "kquant int8": kquant.quantize with its defaults;
- "kquant int8, stem fp32": the same with the first convolution (the one reading the image) kept fp32.
Printed: top-1 agreement with the fp32 Keras model and the SNR of the softmax outputs; then, per fold,
how many held-out faces the fp32 model itself barely decides (top-1 minus top-2 probability below the
median of kquant's largest per-face softmax error), the faces 8-bit noise can flip.
"""

from __future__ import annotations

import numpy as np

import kquant
from kquant import datasets
from kquant.quantization import pipeline
from kquant.quantization.simulation import simulated_graph_def
from kquant.runtime import GraphRunner


def main():
    import keras

    faces = datasets.lfw_faces()
    path = datasets.fer_model_path()
    reference = keras.models.load_model(path, compile=False).predict(faces, verbose=0)
    fp32 = pipeline.optimize(kquant.freeze(path))
    units = pipeline.plan(fp32)
    stem = next(u for u in units if u.kind == "conv").output
    print(f"{'fold':22s} {'variant':28s} agreement  output SNR (dB)")
    for name, calib, held in (("calibrate 0-99", slice(0, 100), slice(100, 200)),
                              ("calibrate 100-199", slice(100, 200), slice(0, 100))):
        ranges = pipeline.calibrate(fp32, units, faces[calib], progress=False)
        with GraphRunner(simulated_graph_def(fp32, units, ranges), fp32.input_names, fp32.output_names) as run:
            results = {"exact 8-bit (simulation)": run(faces[held])[0]}
        results["kquant int8"] = kquant.quantize(path, faces[calib], progress=False).predict(faces[held])
        results["kquant int8, stem fp32"] = kquant.quantize(
            path, faces[calib], excluded_nodes=[stem], progress=False).predict(faces[held])
        want = reference[held]
        for variant, got in results.items():
            agreement = np.mean(got.argmax(1) == want.argmax(1))
            snr = 10 * np.log10(np.mean(want ** 2) / np.mean((got - want) ** 2))
            print(f"{name:22s} {variant:28s} {100 * agreement:7.0f} %  {snr:8.1f}")
        top2 = np.sort(want, axis=1)[:, -2:]
        error = np.median(np.abs(results["kquant int8"] - want).max(axis=1))
        print(f"{name:22s} {np.sum(top2[:, 1] - top2[:, 0] < error)} of {len(want)} faces have an fp32 margin under "
              f"kquant's median softmax error ({error:.3f})")


if __name__ == "__main__":
    main()
