"""What kquant's sequence transforms do for three nets on Fashion-MNIST rows: int8 accuracy, ops and time, with and without them.

    python benchmarks/sequence_nets.py [--nets conv1d,dense,attention] [--runs 200]

Each net reads an image as a sequence of 28 rows of 28 pixels and trains 2 epochs on 20k images:
- conv1d: Conv1D + ReLU, MaxPooling1D, Conv1D + BatchNormalization + ReLU, Flatten, Dense (as
  tests/quantization/test_real_data.py trains it), with and without ``fold_conv1d_squeezes``;
- dense: Dense + ReLU and Dense + GELU on each row, Flatten, Dense, with and without
  ``fold_tensordot_matmuls``;
- attention: a Dense embedding, MultiHeadAttention and a Dense + GELU feed-forward, each with a residual Add
  and LayerNormalization, Flatten, Dense (as tests/quantization/test_real_data.py trains it), with and without
  ``fold_tensordot_matmuls`` (which also makes the attention projections MatMuls).
Every variant quantizes on 1000 training images; "without" runs kquant's list minus the transform.
Printed: test accuracy (10k images), the int8 graph's ops, then the median ms per call of the optimized
fp32 graphs and the int8 graphs at batch 1, 32 and 128, timed in interleaved rounds.
"""

from __future__ import annotations

import argparse
import collections
import functools

import numpy as np

import kquant
from kquant import datasets, transforms
from kquant.benchmark import time_interleaved
from kquant.runtime import GraphRunner

# net -> the transform it shows, and the transforms of kquant's list that make it
NETS = {"conv1d": ("fold_conv1d_squeezes", ["fold_conv1d_squeezes"]),
        "dense": ("fold_tensordot_matmuls", transforms.lists.fold_tensordot_matmuls_trans),
        "attention": ("fold_tensordot_matmuls", transforms.lists.fold_tensordot_matmuls_trans)}


def train(net):
    import keras

    x, y = datasets.fashion_mnist("train")
    keras.utils.set_random_seed(0)
    layers = keras.layers
    if net == "attention":
        inputs = keras.Input((28, 28))
        h = layers.Dense(32)(inputs)
        h = layers.LayerNormalization()(layers.Add()([h, layers.MultiHeadAttention(num_heads=2, key_dim=16)(h, h)]))
        h = layers.LayerNormalization()(layers.Add()([h, layers.Dense(32)(layers.Dense(64, activation="gelu")(h))]))
        model = keras.Model(inputs, layers.Dense(10)(layers.Flatten()(h)))
    else:
        body = ([layers.Conv1D(32, 3, padding="same", activation="relu"), layers.MaxPooling1D(2),
                 layers.Conv1D(32, 3, use_bias=False), layers.BatchNormalization(), layers.ReLU()] if net == "conv1d"
                else [layers.Dense(64, activation="relu"), layers.Dense(32, activation="gelu")])
        model = keras.Sequential([keras.Input((28, 28)), *body, layers.Flatten(), layers.Dense(10)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:20000].reshape(-1, 28, 28), y[:20000], epochs=2, batch_size=128, verbose=0)
    return model, x[:1000].reshape(-1, 28, 28)


def measure(net, runs):
    transform, shown = NETS[net]
    model, calibration = train(net)
    xt, yt = datasets.fashion_mnist("test")
    xt = xt.reshape(-1, 28, 28)
    print(f"{net}: fp32 accuracy {100 * np.mean(model.predict(xt, verbose=0).argmax(1) == yt):.2f} %")
    full = list(transforms.optimize_for_inference_trans)
    runners = {}
    for variant in ("without", "with"):  # the list is changed in place: kquant.quantize reads it
        transforms.optimize_for_inference_trans[:] = [t for t in full if t not in shown] if variant == "without" else full
        fp32 = transforms.optimize_for_inference(kquant.freeze(model))
        int8 = kquant.quantize(model, calibration, progress=False)
        ops = collections.Counter({op: n for op, n in int8.op_counts().items() if op != "Const"})
        print(f"  {variant} {transform}: int8 accuracy {100 * np.mean(int8.predict(xt).argmax(1) == yt):.2f} %, "
              f"{sum(ops.values())} int8-graph ops: " + ", ".join(f"{n} {op}" for op, n in ops.most_common()))
        runners[f"fp32 {variant}"] = GraphRunner(fp32.graph_def, fp32.input_names, fp32.output_names)
        runners[f"int8 {variant}"] = GraphRunner(int8.graph_def, fp32.input_names, fp32.output_names)
    try:
        for batch in (1, 32, 128):
            times = time_interleaved({name: functools.partial(run, xt[:batch]) for name, run in runners.items()}, runs)
            print(f"  batch {batch:3d} median ms: " + ", ".join(f"{name} {1e3 * float(np.median(t)):.3f}" for name, t in times.items()))
    finally:
        for run in runners.values():
            run.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default=",".join(NETS), help=f"comma-separated subset of {','.join(NETS)}")
    parser.add_argument("--runs", type=int, default=200, help="timed calls per graph and batch size (default 200)")
    args = parser.parse_args(argv)
    for net in args.nets.split(","):
        measure(net, args.runs)


if __name__ == "__main__":
    main()
