"""fold_tensordot_shapes: a Dense on a sequence reshapes to [-1, K] and back by constant shapes, or, for a sequence of
unknown length, by a shape read from the input, not by shapes computed from each layer's input at run time."""

import numpy as np
import pytest
import tensorflow as tf

import kquant
from kquant.transforms import optimize_for_inference_trans

from .conftest import Case, assert_ops, count_ops, outputs_of, transformed

BEFORE = optimize_for_inference_trans[:optimize_for_inference_trans.index("fold_tensordot_shapes")]


def prepared(model, x) -> Case:
    """``model`` frozen and run through kquant's list up to this transform, with its outputs on ``x``."""
    frozen = kquant.transforms.apply_transforms(kquant.freeze(model), BEFORE)
    return Case(frozen, [x], [np.asarray(model(x))])


def reshape_shapes(graph) -> list:
    nodes = {n.name: n for n in graph.graph_def.node}
    shapes = [nodes[n.input[1].split(":")[0]] for n in graph.graph_def.node if n.op == "Reshape"]
    return sorted(tf.make_ndarray(s.attr["value"].tensor).tolist() if s.op == "Const" else s.op for s in shapes)


@pytest.mark.parametrize("library", ["keras", "tf_keras"])
def test_dense_layers_on_a_sequence_reshape_by_constant_shapes(library):
    keras = pytest.importorskip(library)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((10, 12)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(8)])
    case = prepared(model, np.random.default_rng(0).standard_normal((3, 10, 12)).astype(np.float32))
    assert count_ops(case.frozen)["GatherV2"] > 0  # each Dense computes its shapes at run time
    result = transformed(case, ["fold_tensordot_shapes"])
    assert_ops(result, GatherV2=0, Transpose=0, Shape=0, MatMul=2)
    assert reshape_shapes(result) == [[-1, 10, 8], [-1, 10, 16], [-1, 12], [-1, 16]]


@pytest.mark.parametrize("library", ["keras", "tf_keras"])
def test_on_a_sequence_of_unknown_length_the_shape_back_is_read_from_the_input(library):
    keras = pytest.importorskip(library)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((None, 12)), keras.layers.Dense(16, activation="gelu"), keras.layers.Dense(8)])
    case = prepared(model, np.random.default_rng(0).standard_normal((3, 7, 12)).astype(np.float32))
    result = transformed(case, ["fold_tensordot_shapes"])
    nodes = {n.name: n for n in result.graph_def.node}
    assert {nodes[n.input[0].split(":")[0]].op for n in result.graph_def.node if n.op == "Shape"} == {"Placeholder"}
    assert count_ops(result)["Shape"] == 1  # both Dense layers read the one input's sizes
    longer = np.random.default_rng(1).standard_normal((2, 11, 12)).astype(np.float32)
    assert np.abs(outputs_of(result, [longer])[0] - np.asarray(model(longer))).max() <= 1e-5


def test_the_shape_of_a_folded_reshape_is_read_through_the_activation_after_it():
    """ConvNeXt's Dense -> GELU -> Dense on [batch, height, width, channels]: TensorFlow cannot infer the second
    Dense's input shape from the first one's run-time shape; the first one's constant shape gives it."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4, 4, 8)), keras.layers.Dense(16, activation="gelu"), keras.layers.Dense(8)])
    case = prepared(model, np.random.default_rng(0).standard_normal((2, 4, 4, 8)).astype(np.float32))
    result = transformed(case, ["fold_tensordot_shapes"])
    assert_ops(result, GatherV2=0, Shape=0)
    assert reshape_shapes(result) == [[-1, 4, 4, 8], [-1, 4, 4, 16], [-1, 8], [-1, 16]]
