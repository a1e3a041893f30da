"""Where fer's int8 agreement stands against exact 8-bit arithmetic: a fake-quant simulation of the same plan.

    python benchmarks/fer_gap.py

Two folds of scikit-image's 200 LFW faces (calibrate on one half, evaluate on the other). For each:
- "exact 8-bit": `kquant.quantization.qdq` on kquant's plan and calibrated ranges: int8-rounded
  weights and an asymmetric FakeQuant at every quantized tensor, i.e. exact rounding, no kernel effects;
- "kquant int8": kquant.quantize with its defaults, which keep the image stem (the convolution reading the
  image) fp32;
- "kquant int8, stem int8": the same with the stem quantized too (``stem="int8"``).
Printed: top-1 agreement with the fp32 Keras model and the SNR of the softmax outputs; then, per fold,
how many held-out faces the fp32 model itself barely decides (top-1 minus top-2 probability below the
median of kquant's largest per-face softmax error), the faces 8-bit noise can flip. Last, on the
first fold with every convolution planned int8 (the stem too): the output SNR when only one activation
tensor is rounded (weights fp32), for the five costliest, and when all are: which rounding costs most.
"""

from __future__ import annotations

import copy

import numpy as np

import kquant
from kquant import datasets
from kquant.quantization import pipeline
from kquant.quantization.collect import calibrate
from kquant.quantization.config import QuantizationConfig
from kquant.quantization.qdq import qdq_graph_def
from kquant.quantization.rewrite import rewrite_graph
from kquant.runtime import GraphRunner

COSTLIEST = 5


def simulated(fp32, units, ranges):
    """The QDQ graph of ``units`` as the rewrite emits them (residual sums it cannot fuse back in fp32)."""
    return qdq_graph_def(fp32, rewrite_graph(fp32.graph_def, units, ranges, fp32.output_names)[1], ranges)


def main():
    import keras

    faces = datasets.lfw_faces()
    path = datasets.fer_model_path()
    reference = keras.models.load_model(path, compile=False).predict(faces, verbose=0)
    prepared = pipeline.prepare(kquant.freeze(path), QuantizationConfig())
    fp32, units = prepared.fp32, prepared.candidates
    print(f"{'fold':22s} {'variant':28s} agreement  output SNR (dB)")
    for name, calib, held in (("calibrate 0-99", slice(0, 100), slice(100, 200)),
                              ("calibrate 100-199", slice(100, 200), slice(0, 100))):
        ranges = calibrate(fp32, units, faces[calib], progress=False)
        with GraphRunner(simulated(fp32, units, ranges), fp32.input_names, fp32.output_names) as run:
            results = {"exact 8-bit (simulation)": run(faces[held])[0]}
        results["kquant int8"] = kquant.quantize(path, faces[calib], progress=False).predict(faces[held])
        results["kquant int8, stem int8"] = kquant.quantize(path, faces[calib], stem="int8", progress=False).predict(faces[held])
        want = reference[held]
        for variant, got in results.items():
            agreement = np.mean(got.argmax(1) == want.argmax(1))
            snr = 10 * np.log10(np.mean(want ** 2) / np.mean((got - want) ** 2))
            print(f"{name:22s} {variant:28s} {100 * agreement:7.0f} %  {snr:8.1f}")
        top2 = np.sort(want, axis=1)[:, -2:]
        error = np.median(np.abs(results["kquant int8"] - want).max(axis=1))
        print(f"{name:22s} {np.sum(top2[:, 1] - top2[:, 0] < error)} of {len(want)} faces have an fp32 margin under "
              f"kquant's median softmax error ({error:.3f})")
    every = pipeline.plan(fp32)
    ranges = calibrate(fp32, every, faces[:100], progress=False)
    simulation = simulated(fp32, every, ranges)
    roundings = [n.name for n in simulation.node if n.op == "FakeQuantWithMinMaxArgs"]
    want = reference[100:]

    def snr_rounding(kept):
        with GraphRunner(only_rounding(simulation, fp32.graph_def, kept), fp32.input_names, fp32.output_names) as run:
            got = run(faces[100:])[0]
        return 10 * np.log10(np.mean(want ** 2) / np.mean((got - want) ** 2))

    costs = sorted((snr_rounding({r}), r.removesuffix("/fake_quant")) for r in roundings)
    print(f"\noutput SNR (dB) on faces 100-199, weights fp32, stem int8; all {len(roundings)} activation roundings: "
          f"{snr_rounding(set(roundings)):.1f}; only one:")
    for snr, tensor in costs[:COSTLIEST]:
        print(f"  {snr:5.1f}  {tensor}")


def only_rounding(simulated, fp32_graph_def, kept):
    """The simulation with fp32 weights and only the FakeQuant nodes named in ``kept`` (the others pass through)."""
    # imported here, after kquant, which turns oneDNN on before TensorFlow loads
    from tensorflow.core.framework import types_pb2

    graph_def = copy.deepcopy(simulated)
    weights = {n.name: n for n in fp32_graph_def.node if n.op == "Const"}
    for node in graph_def.node:
        if node.name in weights:
            node.CopyFrom(weights[node.name])
        elif node.op == "FakeQuantWithMinMaxArgs" and node.name not in kept:
            node.op = "Identity"
            node.ClearField("attr")
            node.attr["T"].type = types_pb2.DT_FLOAT
    return graph_def


if __name__ == "__main__":
    main()
