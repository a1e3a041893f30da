"""Numerical edge cases: all-zero, constant, huge (1e6), tiny (1e-8) and negative-only activations.

Stated tolerance: the int8 output is within TOLERANCE of the fp32 one, relative to the largest fp32 output
magnitude (about 10 steps of an 8-bit range), never NaN or Inf; an exactly zero fp32 output stays exactly
zero. Since kquant sets QuantizeV2's ensure_minimum_range to 0 (TF's default
0.01 widens a range of 1e-8 to 0.01 and rounds every value to 0) and puts no floor under requantize ranges,
int8 error is scale-invariant: inputs times 1e-8 or 1e6 give the same relative error as the inputs themselves.
"""

from __future__ import annotations

import numpy as np
import pytest

import kquant

TOLERANCE = 0.08
METHODS = ["minmax", "percentile", "kl"]


def conv_model(keras):
    layers = keras.layers
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((8, 8, 3), name="x"), layers.Conv2D(8, 3, padding="same"),
                             layers.Conv2D(8, 3, activation="relu", padding="same"), layers.Flatten(), layers.Dense(4)])


def dense_model(keras):
    """Dense layers fed straight from the input: MatMul's MIN_FIRST quint8 input path."""
    keras.utils.set_random_seed(1)
    return keras.Sequential([keras.Input((6,), name="x"), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])


@pytest.fixture(scope="module")
def models():
    import keras

    return {"conv": conv_model(keras), "dense": dense_model(keras)}


def _inputs(kind: str, shape) -> np.ndarray:
    base = np.random.default_rng(0).standard_normal((32, *shape)).astype(np.float32)
    return {"zeros": np.zeros_like(base), "constant": np.full_like(base, 0.7), "huge": base * 1e6,
            "tiny": base * 1e-8, "negative_only": -np.abs(base), "normal": base}[kind]


def relative_error(model, x, method="minmax") -> float:
    qmodel = kquant.quantize(model, x, calibration=method, stem="int8", progress=False)  # the convs' int8 numerics
    got, want = qmodel.predict(x), model.predict(x, verbose=0)
    assert np.isfinite(got).all()
    scale = np.abs(want).max()
    if scale == 0:
        assert np.array_equal(got, want)
        return 0.0
    return float(np.abs(got - want).max() / scale)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", ["zeros", "constant", "huge", "tiny", "negative_only", "normal"])
@pytest.mark.parametrize("name", ["conv", "dense"])
def test_edge_case_inputs_stay_within_tolerance(name, kind, method, models):
    model = models[name]
    assert relative_error(model, _inputs(kind, model.input_shape[1:]), method) <= TOLERANCE


@pytest.mark.parametrize("name", ["conv", "dense"])
def test_int8_error_does_not_depend_on_the_scale_of_the_values(name, models):
    model = models[name]
    x = _inputs("normal", model.input_shape[1:])
    reference = relative_error(model, x)
    for factor in (1e-8, 1e-4, 1e6):
        assert relative_error(model, x * np.float32(factor)) == pytest.approx(reference, abs=0.01), factor


def test_quantize_v2_does_not_widen_small_ranges(models):
    qmodel = kquant.quantize(models["conv"], _inputs("tiny", (8, 8, 3)), stem="int8", progress=False)
    quantize = [node for node in qmodel.graph_def.node if node.op == "QuantizeV2"]
    assert quantize and all(node.attr["ensure_minimum_range"].f == 0.0 for node in quantize)


def test_all_zero_activations_between_two_convs():
    """A ReLU that outputs only zeros feeds the next conv: its range is (0, 1e-6), the result is the bias alone."""
    import keras

    layers = keras.layers
    model = keras.Sequential([keras.Input((6, 6, 2), name="x"), layers.Conv2D(4, 3, activation="relu"),
                              layers.Conv2D(3, 3), layers.Flatten()])
    first, second = model.layers[0], model.layers[1]
    first.set_weights([np.full((3, 3, 2, 4), 0.5, np.float32), np.zeros(4, np.float32)])
    second.set_weights([np.random.default_rng(0).standard_normal((3, 3, 4, 3)).astype(np.float32),
                        np.array([0.25, -1.5, 3.0], np.float32)])
    x = -np.random.default_rng(1).random((8, 6, 6, 2), dtype=np.float32)  # negative inputs: the ReLU gives zeros
    for method in METHODS:
        qmodel = kquant.quantize(model, x, calibration=method, stem="int8", progress=False)
        assert qmodel.op_counts()["_FusedQuantizedConv2D"] == 2
        got = qmodel.predict(x)
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, np.tile([0.25, -1.5, 3.0], (8, 4)), atol=TOLERANCE * 3.0)
