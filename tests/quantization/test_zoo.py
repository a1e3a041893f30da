"""Keras's own architectures, in Keras 3 and tf_keras, at the smallest input each accepts: the optimized fp32
graph computes the model exactly, and the int8 graph runs int8 units, is finite, repeats, and is about as close to
fp32 as the exact 8-bit simulation of its plan.

The subset of `benchmarks/zoo.py` (all 40 architectures, results in benchmarks/ZOO.md) that covers the layer forms the
random-architecture tests do not build: DenseNet's bias-less conv + BatchNormalization(axis=3), Inception's
branches, MobileNet's depthwise convs and hard-swish, EfficientNet's swish and squeeze-and-excitation, NASNet's
separable convs and ConvNeXt's depthwise 7x7 + LayerNorm + GELU. Random weights: coverage and exactness, not accuracy.
"""

import numpy as np
import pytest

import kquant
from kquant.quantization.qdq import qdq_graph_def
from kquant.runtime import GraphRunner

ARCHITECTURES = {  # -> (the smallest input side, the module with preprocess_input)
    "DenseNet121": (32, "densenet"),
    "InceptionV3": (75, "inception_v3"),
    "MobileNetV2": (32, "mobilenet_v2"),
    "MobileNetV3Small": (32, "mobilenet_v3"),
    "EfficientNetB0": (32, "efficientnet"),
    "NASNetMobile": (32, "nasnet"),
    "ConvNeXtTiny": (32, "convnext"),
}
FP32_BOUND = 1e-4  # the optimized fp32 graph's max |error| / max |output|
RATIO = 2.0  # int8 RMS error against fp32 / the exact 8-bit simulation's


@pytest.mark.parametrize("keras_module", ["keras", "tf_keras"])
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_keras_application_quantizes_close_to_exact_8bit(arch, keras_module):
    keras = pytest.importorskip(keras_module)
    side, module = ARCHITECTURES[arch]
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, arch)(weights=None, input_shape=(side, side, 3), classifier_activation=None)
    rng = np.random.default_rng(0)
    x = np.asarray(getattr(keras.applications, module).preprocess_input(
        rng.uniform(0, 255, (12, side, side, 3)).astype(np.float32)), np.float32)
    calibration, evaluation = x[:8], x[8:]

    qmodel = kquant.quantize(model, calibration, batch_size=8, progress=False)
    result, fp32 = qmodel.result, qmodel.result.fp32  # the optimized fp32 graph it was built from
    with GraphRunner(fp32.graph_def, fp32.input_names, fp32.output_names) as run:
        optimized = run(evaluation)[0]
    ref = model.predict(evaluation, verbose=0)
    assert np.abs(optimized - ref).max() <= FP32_BOUND * np.abs(ref).max()
    assert sum(u.weighted for u in result.units) >= 10
    got = qmodel.predict(evaluation)
    assert np.isfinite(got).all() and np.array_equal(got, qmodel.predict(evaluation))
    with GraphRunner(qdq_graph_def(result.fp32, result.units, result.ranges), fp32.input_names, fp32.output_names) as run:
        exact = run(evaluation)[0]
    rms = np.sqrt(np.mean((got - optimized) ** 2)), np.sqrt(np.mean((exact - optimized) ** 2))
    assert rms[0] <= RATIO * rms[1], (rms, qmodel.op_counts())
