"""A transformer encoder on Fashion-MNIST rows: int8 accuracy and speed against fp32, at a size where matmuls count.

    python benchmarks/transformer.py [--d-model 256] [--ff 1024] [--heads 4] [--layers 2] [--epochs 1] [--runs 60] [--any-length]

The net reads each image as 28 tokens of 28 pixels: a Dense embedding to d-model, ``layers`` encoder blocks
(MultiHeadAttention, then a Dense + GELU and a Dense feed-forward, each with a residual Add and
LayerNormalization), global average pooling and a Dense head; with ``--any-length`` its input takes sequences
of any length (shape (None, 28)), fed 28 tokens here. It trains ``epochs`` on 20k images and
quantizes on 500 others. Printed: test accuracy (10k images) of the Keras model and the int8 graph, the int8
graph's ops, and the median ms per call of the optimized fp32 graph and the int8 graph at batch 1, 32 and
128, timed in interleaved rounds.
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


def encoder(keras, d_model, ff, heads, depth, steps=28):
    layers = keras.layers
    inputs = keras.Input((steps, 28))
    h = layers.Dense(d_model)(inputs)
    for _ in range(depth):
        attention = layers.MultiHeadAttention(num_heads=heads, key_dim=d_model // heads)(h, h)
        h = layers.LayerNormalization()(layers.Add()([h, attention]))
        feed_forward = layers.Dense(d_model)(layers.Dense(ff, activation="gelu")(h))
        h = layers.LayerNormalization()(layers.Add()([h, feed_forward]))
    return keras.Model(inputs, layers.Dense(10)(layers.GlobalAveragePooling1D()(h)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--ff", type=int, default=1024, help="feed-forward width (default 1024)")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--layers", type=int, default=2, help="encoder blocks (default 2)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--runs", type=int, default=60, help="timed calls per graph and batch size (default 60)")
    parser.add_argument("--any-length", action="store_true", help="a model input of shape (None, 28)")
    args = parser.parse_args(argv)

    import keras

    x, y = datasets.fashion_mnist("train")
    xt, yt = datasets.fashion_mnist("test")
    x, xt = x.reshape(-1, 28, 28), xt.reshape(-1, 28, 28)
    keras.utils.set_random_seed(0)
    model = encoder(keras, args.d_model, args.ff, args.heads, args.layers, None if args.any_length else 28)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:20000], y[:20000], epochs=args.epochs, batch_size=128, verbose=0)
    int8 = kquant.quantize(model, x[20000:20500], progress=False)
    fp32 = transforms.optimize_for_inference(kquant.freeze(model))
    accuracy = {"fp32": np.mean(model.predict(xt, verbose=0).argmax(1) == yt), "int8": np.mean(int8.predict(xt).argmax(1) == yt)}
    print(f"d_model {args.d_model}, ff {args.ff}, {args.heads} heads, {args.layers} blocks"
          f"{', any length' if args.any_length else ''}: test accuracy fp32 "
          f"{100 * accuracy['fp32']:.2f} %, int8 {100 * accuracy['int8']:.2f} %")
    ops = collections.Counter({op: n for op, n in int8.op_counts().items() if op != "Const"})
    print("int8 graph: " + ", ".join(f"{n} {op}" for op, n in ops.most_common()))
    runners = {"fp32": GraphRunner(fp32.graph_def, fp32.input_names, fp32.output_names),
               "int8": GraphRunner(int8.graph_def, fp32.input_names, fp32.output_names)}
    try:
        for batch in (1, 32, 128):
            times = time_interleaved({name: functools.partial(run, xt[:batch]) for name, run in runners.items()}, args.runs)
            ms = {name: 1e3 * float(np.median(t)) for name, t in times.items()}
            print(f"batch {batch:3d}: fp32 {ms['fp32']:.3f} ms, int8 {ms['int8']:.3f} ms, int8 speed-up {ms['fp32'] / ms['int8']:.2f}×")
    finally:
        for run in runners.values():
            run.close()


if __name__ == "__main__":
    main()
