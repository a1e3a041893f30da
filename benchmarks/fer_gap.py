"""Where fer's int8 agreement stands against exact 8-bit arithmetic: a fake-quant simulation of the same plan.

    python benchmarks/fer_gap.py

Two folds of scikit-image's 200 LFW faces (calibrate on one half, evaluate on the other). For each:
- "exact 8-bit": the optimized fp32 graph with every quantized weight replaced by its per-channel int8
  value and a FakeQuant (asymmetric, TFLite's scheme) at every tensor the int8 graph quantizes, using
  kquant's calibrated ranges: what the plan costs with exact rounding and no kernel effects;
- "kquant int8": kquant.quantize with its defaults;
- "kquant int8, stem fp32": the same with the first convolution (the one reading the image) kept fp32.
Printed: top-1 agreement with the fp32 Keras model and the SNR of the softmax outputs.
"""

from __future__ import annotations

import copy

import kquant  # first: it turns oneDNN on before TensorFlow loads
import numpy as np
import tensorflow as tf
from tensorflow.python.framework import tensor_util

from kquant import datasets
from kquant.quantization import pipeline
from kquant.quantization.rewrite import _quantize_weights
from kquant.runtime import GraphRunner


def simulated(fp32, units, ranges) -> tf.compat.v1.GraphDef:
    """``fp32`` with int8-rounded weights and FakeQuant on every tensor the int8 graph quantizes."""
    graph_def = copy.deepcopy(fp32.graph_def)
    nodes = {n.name: n for n in graph_def.node}
    weighted = [u for u in units if u.kind in ("conv", "matmul")]
    for unit in weighted:
        node = nodes[unit.weights]
        weights = tensor_util.MakeNdarray(node.attr["value"].tensor)
        depthwise = nodes[unit.anchor].op == "DepthwiseConv2dNative"
        q, w_max = _quantize_weights(weights, unit.kind == "conv", depthwise)
        channels = weights.shape[2] * weights.shape[3] if depthwise else weights.shape[-1]
        flat = q.reshape(-1, channels) if unit.kind == "conv" else q.reshape(-1, 1)
        exact = (flat * (w_max / 127.0)).reshape(weights.shape).astype(np.float32)
        node.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(exact))
    produced = {u.output_tensor for u in weighted}
    points = [u.output_tensor for u in weighted] + [u.data_input for u in weighted if u.data_input not in produced]
    for tensor in dict.fromkeys(points):
        low, high = ranges[tensor]
        name = tensor.split(":")[0]
        fake = tf.compat.v1.NodeDef(name=f"{name}/fake_quant", op="FakeQuantWithMinMaxArgs", input=[name])
        fake.attr["min"].f, fake.attr["max"].f, fake.attr["num_bits"].i = min(low, 0.0), max(high, 0.0), 8
        for node in graph_def.node:
            node.input[:] = [fake.name if i in (name, tensor) else i for i in node.input]
        graph_def.node.append(fake)
    return graph_def


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
        with GraphRunner(simulated(fp32, units, ranges), fp32.input_names, fp32.output_names) as run:
            results = {"exact 8-bit (simulation)": run(faces[held])[0]}
        results["kquant int8"] = kquant.quantize(path, faces[calib], progress=False).predict(faces[held])
        results["kquant int8, stem fp32"] = kquant.quantize(
            path, faces[calib], excluded_nodes=[stem], progress=False).predict(faces[held])
        want = reference[held]
        for variant, got in results.items():
            agreement = np.mean(got.argmax(1) == want.argmax(1))
            snr = 10 * np.log10(np.mean(want ** 2) / np.mean((got - want) ** 2))
            print(f"{name:22s} {variant:28s} {100 * agreement:7.0f} %  {snr:8.1f}")


if __name__ == "__main__":
    main()
