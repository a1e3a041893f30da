"""The tensordot transforms together (kquant's list, and fold_tensordot_matmuls, one name for them): Dense layers on
sequences and attention's projections run as 2-D MatMuls, each followed by its bias."""

import numpy as np
import pytest
import tensorflow as tf

import kquant
from kquant.transforms import optimize_for_inference_trans
from kquant.transforms.lists import fold_tensordot_matmuls_trans
from tests.quantization.test_random_architectures import assert_tracks_exact_8bit

from .conftest import (
    Case,
    assert_ops,
    count_ops,
    outputs_of,
    transformed,
)


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
    before = count_ops(transformed(case, [t for t in optimize_for_inference_trans if t not in fold_tensordot_matmuls_trans]))
    assert before["Transpose"] == 3 and before["GatherV2"] == 6  # each Dense computes its shapes at run time
    result = transformed(case, optimize_for_inference_trans)
    assert_ops(result, Transpose=0, GatherV2=0, ConcatV2=0, MatMul=4, BiasAdd=4)
    assert matmul_readers(result) == ["BiasAdd"] * 4  # every bias right after its MatMul
    nodes = {n.name: n for n in result.graph_def.node}
    node = next(n for n in result.graph_def.node if n.op == "Erfc")  # the GELU computes on the MatMul's 2-D output
    while node.op != "MatMul":
        node = nodes[next(i for i in node.input if nodes[i.split(":")[0]].op != "Const").split(":")[0]]
        assert node.op != "Reshape"


def test_fold_tensordot_matmuls_is_the_tensordot_transforms_in_the_list_order():
    import keras

    case = sequence_case(keras)
    prepared = transformed(case, optimize_for_inference_trans[:optimize_for_inference_trans.index(fold_tensordot_matmuls_trans[0])])
    prepared_case = Case(prepared, case.inputs, case.expected)
    by_name = transformed(prepared_case, ["fold_tensordot_matmuls"]).graph_def
    by_list = transformed(prepared_case, fold_tensordot_matmuls_trans).graph_def
    assert by_name.SerializeToString(deterministic=True) == by_list.SerializeToString(deterministic=True)
    assert count_ops(by_name)["Transpose"] == 0 < count_ops(prepared)["Transpose"]


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


@pytest.mark.parametrize("library", ["keras", "tf_keras"])
def test_a_sequence_of_unknown_length_is_a_matmul_chain_too_whose_shape_comes_from_the_input(library):
    keras = pytest.importorskip(library)
    model = attention_net(keras, steps=None)
    rng = np.random.default_rng(0)
    x, longer = rng.standard_normal((3, 7, 12)).astype(np.float32), rng.standard_normal((2, 9, 12)).astype(np.float32)
    result = transformed(Case(kquant.freeze(model), [x], [model(x).numpy()]), optimize_for_inference_trans)
    assert_ops(result, BatchMatMulV2=0, Einsum=2, MatMul=9, Transpose=0)
    assert np.abs(outputs_of(result, [longer])[0] - model(longer).numpy()).max() <= 1e-5  # any length
    assert sorted(set(matmul_readers(result))) in (["BiasAdd"], ["AddV2", "BiasAdd"])
    counts = kquant.quantize(model, rng.normal(0.2, 1.0, (32, 7, 12)).astype(np.float32), progress=False).op_counts()
    assert counts["_QuantizedMatMul"] == 9 and "MatMul" not in counts


def attention_net(keras, steps=10):
    """Dense, MultiHeadAttention (EinsumDense projections), LayerNormalization, two EinsumDense with biases over
    one and two axes, a Dense + GELU and a Dense head, on ``steps`` tokens (None: any number)."""
    layers = keras.layers
    keras.utils.set_random_seed(0)
    inputs = keras.Input((steps, 12))
    x = layers.Dense(16)(inputs)
    x = layers.LayerNormalization()(layers.Add()([x, layers.MultiHeadAttention(num_heads=2, key_dim=8)(x, x)]))
    x = layers.EinsumDense("abc,cd->abd", output_shape=(None, 16), bias_axes="d")(x)
    x = layers.EinsumDense("abc,cde->abde", output_shape=(None, 4, 4), bias_axes="de", activation="relu")(x)
    x = layers.Dense(16, activation="gelu")(layers.Reshape((-1, 16))(x))
    return keras.Model(inputs, layers.Dense(3)(layers.GlobalAveragePooling1D()(x)))


@pytest.mark.parametrize("library", ["keras", "tf_keras"])
def test_attention_projections_and_einsum_dense_are_matmuls_followed_by_their_bias(library):
    model = attention_net(pytest.importorskip(library))
    x = np.random.default_rng(0).standard_normal((3, 10, 12)).astype(np.float32)
    case = Case(kquant.freeze(model), [x], [model(x).numpy()])
    before = count_ops(transformed(case, [t for t in optimize_for_inference_trans if t not in fold_tensordot_matmuls_trans]))
    assert before["BatchMatMulV2"] + before["Einsum"] == 8  # 6 projections by a constant, 2 of activations
    result = transformed(case, optimize_for_inference_trans)
    assert_ops(result, BatchMatMulV2=0, Einsum=2, MatMul=9)  # attention's scores and mix stay products of activations
    assert sorted(set(matmul_readers(result))) in (["BiasAdd"], ["AddV2", "BiasAdd"])  # each bias right after its MatMul
    nodes = {n.name: n for n in result.graph_def.node}
    for matmul in (n for n in result.graph_def.node if n.op == "MatMul"):
        bias = next(n for n in result.graph_def.node if matmul.name in n.input)
        assert nodes[bias.input[1]].op == "Const" and np.ndim(tf.make_ndarray(nodes[bias.input[1]].attr["value"].tensor)) == 1


def test_quantized_attention_projections_run_as_int8_matmuls():
    import keras

    model = attention_net(keras)
    x = np.random.default_rng(0).normal(0.2, 1.0, (80, 10, 12)).astype(np.float32)
    counts = kquant.quantize(model, x[:64], progress=False).op_counts()
    assert counts["_QuantizedMatMul"] == 9 and "MatMul" not in counts and "BatchMatMulV2" not in counts
    # query, key and value hand fp32 to attention from their kernels: no int8 Reshape and Dequantize after them
    assert counts["Dequantize"] == 1 and counts.get("QuantizedReshape", 0) <= 1, counts
    assert_tracks_exact_8bit(model, x)


def test_quantized_dense_layers_on_a_sequence_of_unknown_length_dequantize_nothing_for_a_shape():
    import keras

    keras.utils.set_random_seed(0)
    layers = keras.layers
    model = keras.Sequential([keras.Input((None, 12)), layers.Dense(16, activation="gelu"), layers.Dense(16, activation="gelu"),
                              layers.Dense(8), layers.GlobalAveragePooling1D(), layers.Dense(3)])
    x = np.random.default_rng(0).normal(0.2, 1.0, (40, 7, 12)).astype(np.float32)
    qmodel = kquant.quantize(model, x[:32], progress=False)
    assert qmodel.op_counts()["_QuantizedMatMul"] == 4
    nodes = {n.name: n for n in qmodel.graph_def.node}
    for shape in (n for n in qmodel.graph_def.node if n.op == "Shape"):  # each sequence's sizes read from the input
        assert nodes[shape.input[0].split(":")[0]].op == "Placeholder"
    assert np.abs(qmodel.predict(x[32:]) - model.predict(x[32:], verbose=0)).max() < 0.1


@pytest.mark.parametrize("library", ["keras", "tf_keras"])
def test_dense_layers_on_an_image_after_a_layer_norm_fuse_their_gelu(library):
    """ConvNeXt's block: LayerNorm -> Dense -> GELU -> Dense on [batch, height, width, channels]: the second Dense's
    input shape is read through the GELU from the first one's (TensorFlow cannot infer it), so the GELU fuses."""
    keras = pytest.importorskip(library)
    keras.utils.set_random_seed(0)
    layers = keras.layers
    inputs = keras.Input((4, 4, 8), name="x")
    x = layers.Dense(16)(layers.LayerNormalization(epsilon=1e-6)(inputs))
    x = layers.Dense(8)(layers.Activation("gelu")(x))
    model = keras.Model(inputs, layers.Dense(3)(layers.Flatten()(layers.Add()([inputs, x]))))
    x = np.random.default_rng(0).normal(0.2, 1.0, (48, 4, 4, 8)).astype(np.float32)
    counts = kquant.quantize(model, x[:32], progress=False).op_counts()
    assert counts["_QuantizedMatMul"] == 3 and not {"Erfc", "Erf", "Shape"} & set(counts), counts
    assert_tracks_exact_8bit(model, x)
