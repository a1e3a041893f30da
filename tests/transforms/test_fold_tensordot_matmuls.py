"""fold_tensordot_matmuls: Dense layers on sequences run as one 2-D MatMul chain, each followed by its bias and activation."""

import numpy as np
import pytest

import kquant
from kquant.transforms import optimize_for_inference_trans
from tests.quantization.test_random_architectures import assert_tracks_exact_8bit

from .conftest import Case, assert_ops, count_ops, transformed


def sequence_net(keras, steps=10):
    """Dense + ReLU, Dense + GELU, LayerNormalization, Dense on [steps, 12] sequences, then Flatten and a Dense head."""
    layers = keras.layers
    keras.utils.set_random_seed(0)
    inputs = keras.Input((steps, 12), name="tokens")
    x = layers.Dense(16, activation="relu")(inputs)
    x = layers.Dense(16, activation="gelu")(x)
    x = layers.Dense(8)(layers.LayerNormalization()(x))
    return keras.Model(inputs, layers.Dense(3, name="out")(layers.Flatten()(x)))


def sequence_case(keras, steps=10) -> Case:
    model = sequence_net(keras, steps)
    x = np.random.default_rng(0).standard_normal((3, 10, 12)).astype(np.float32)
    return Case(kquant.freeze(model), [x], [model(x).numpy()])


def matmul_readers(graph):
    nodes = {n.name: n for n in graph.graph_def.node}
    return sorted(n.op for n in graph.graph_def.node for i in n.input if nodes[i.split(":")[0]].op == "MatMul")


@pytest.mark.parametrize("library", ["keras", "tf_keras"])
def test_dense_layers_on_a_sequence_are_matmuls_followed_by_their_bias(library):
    case = sequence_case(pytest.importorskip(library))
    before = count_ops(transformed(case, [t for t in optimize_for_inference_trans if t != "fold_tensordot_matmuls"]))
    assert before["Transpose"] == 3 and before["GatherV2"] == 6  # each Dense computes its shapes at run time
    result = transformed(case, optimize_for_inference_trans)
    assert_ops(result, Transpose=0, GatherV2=0, ConcatV2=0, MatMul=4, BiasAdd=4)
    assert matmul_readers(result) == ["BiasAdd"] * 4  # every bias right after its MatMul
    nodes = {n.name: n for n in result.graph_def.node}
    node = next(n for n in result.graph_def.node if n.op == "Erfc")  # the GELU computes on the MatMul's 2-D output
    while node.op != "MatMul":
        node = nodes[next(i for i in node.input if nodes[i.split(":")[0]].op != "Const").split(":")[0]]
        assert node.op != "Reshape"


def test_quantized_dense_layers_on_a_sequence_form_one_int8_chain():
    import keras

    keras.utils.set_random_seed(0)
    layers = keras.layers
    model = keras.Sequential([keras.Input((10, 12)), layers.Dense(16, activation="relu"), layers.Dense(16, activation="gelu"),
                              layers.Dense(16, activation="tanh"), layers.Dense(8), layers.Flatten(), layers.Dense(4)])
    x = np.random.default_rng(0).normal(0.2, 1.0, (80, 10, 12)).astype(np.float32)
    counts = kquant.quantize(model, x[:64], progress=False).op_counts()
    assert counts["_QuantizedMatMul"] == 5 and counts["QuantizeV2"] == 1
    assert not {"Dequantize", "BiasAdd", "Relu", "Tanh", "Erfc", "Mul", "MatMul"} & set(counts), counts
    assert_tracks_exact_8bit(model, x)  # within 2x the error of exact 8-bit arithmetic, repeatable


def test_a_sequence_of_unknown_length_is_left_alone():
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((None, 12)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(4)])
    x = np.random.default_rng(0).standard_normal((2, 7, 12)).astype(np.float32)
    case = Case(kquant.freeze(model), [x], [model(x).numpy()])
    before = transformed(case, [t for t in optimize_for_inference_trans if t != "fold_tensordot_matmuls"])
    assert count_ops(transformed(case, optimize_for_inference_trans)) == count_ops(before)
