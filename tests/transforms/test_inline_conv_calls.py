"""inline_conv_calls: Keras 3's depthwise-grouped Conv2D (an XLA function call once frozen) becomes a
DepthwiseConv2dNative that folds and quantizes; other grouped convolutions stay in their call, still exact."""

import numpy as np

import kquant
from kquant.quantization import pipeline
from kquant.runtime import GraphRunner

from ..quantization.test_random_architectures import assert_tracks_exact_8bit
from .conftest import EXACT, count_ops


def grouped_net(keras, groups_of_last=8):
    """ConvNeXt's depthwise 7x7 (groups = channels), a grouped conv doubling the channels (depthwise multiplier 2),
    then a conv with ``groups_of_last`` groups over 16 channels and a dense head."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((10, 10, 8), name="x")
    x = keras.layers.Conv2D(8, 7, padding="same", groups=8)(inputs)
    x = keras.layers.Conv2D(16, 3, padding="same", groups=8, activation="relu")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", groups=groups_of_last)(x)
    return keras.Model(inputs, keras.layers.Dense(4)(keras.layers.Flatten()(x)))


def optimized_and_error(model, x):
    fp32 = pipeline.optimize(kquant.freeze(model))
    with GraphRunner(fp32.graph_def, fp32.input_names, fp32.output_names) as run:
        got = run(x)[0]
    ref = model.predict(x, verbose=0)
    return fp32, np.abs(got - ref).max() / np.abs(ref).max()


def test_depthwise_grouped_convs_leave_their_calls_exactly():
    import keras

    model = grouped_net(keras, groups_of_last=16)
    frozen = kquant.freeze(model)
    assert count_ops(frozen)["StatefulPartitionedCall"] == 3  # what Keras 3 freezes them to
    fp32, error = optimized_and_error(model, np.random.default_rng(0).normal(size=(4, 10, 10, 8)).astype(np.float32))
    ops = count_ops(fp32)
    assert ops["DepthwiseConv2dNative"] == 3 and ops["StatefulPartitionedCall"] == 0 and not fp32.graph_def.library.function
    assert error <= EXACT


def test_other_grouped_convs_stay_in_their_call():
    import keras

    model = grouped_net(keras, groups_of_last=2)  # 8 input channels per group
    fp32, error = optimized_and_error(model, np.random.default_rng(0).normal(size=(4, 10, 10, 8)).astype(np.float32))
    ops = count_ops(fp32)
    assert ops["DepthwiseConv2dNative"] == 2 and ops["StatefulPartitionedCall"] == 1 and len(fp32.graph_def.library.function) == 1
    assert error <= EXACT


def test_inlined_depthwise_convs_run_int8_close_to_exact_8bit():
    import keras

    model = grouped_net(keras, groups_of_last=2)
    x = np.random.default_rng(1).normal(0.2, 1.0, (48, 10, 10, 8)).astype(np.float32)
    assert_tracks_exact_8bit(model, x)
    assert kquant.quantize(model, x[:32], progress=False).op_counts()["_FusedQuantizedDepthwiseConv2D"] == 2
