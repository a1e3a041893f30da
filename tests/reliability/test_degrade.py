"""Degrade, don't fail: a transform or the int8 rewrite that cannot handle one subgraph leaves it as it was
(fp32), with one warning naming what and where, and the model still computes its function."""

import importlib
import re

import numpy as np
import pytest
import tensorflow as tf

import kquant
from kquant.quantization.ops.depthwise import DepthwiseConvolution
from kquant.transforms import apply_transforms, optimize_for_inference_trans
from kquant.transforms.rewrites import fold_keras_batch_norms as fold_module
from tests.quantization.test_api import close_in_steps, small_cnn
from tests.transforms.conftest import Case, EXACT, assert_same_outputs, case_from_function, count_ops, randomize_batch_norms

PREPARE = ["remove_freeze_leftovers", "fold_constants(ignore_errors=true)"]


def keras3_bn_convs():
    import keras

    keras.utils.set_random_seed(0)
    image = keras.Input((10, 10, 3))
    x = keras.layers.BatchNormalization()(keras.layers.Conv2D(6, 3, name="first")(image))
    x = keras.layers.BatchNormalization(name="bn_second")(keras.layers.Conv2D(4, 3, name="second")(x))
    model = keras.Model(image, x)
    randomize_batch_norms(model)
    x = np.random.default_rng(0).standard_normal((4, 10, 10, 3)).astype(np.float32)
    return Case(kquant.freeze(model), [x], [np.asarray(model(x, training=False))])


def test_a_fold_that_fails_on_one_match_leaves_it_and_folds_the_rest(monkeypatch):
    case = keras3_bn_convs()
    prepared = apply_transforms(case.frozen, PREPARE)
    real = fold_module._fold

    def failing_on_the_second(match, index):
        if "second" in match["conv"].name:
            raise ValueError("an unforeseen form")
        return real(match, index)

    monkeypatch.setattr(fold_module, "_fold", failing_on_the_second)
    with pytest.warns(UserWarning) as caught:
        result = apply_transforms(prepared, ["fold_keras_batch_norms"])
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1
    assert re.fullmatch(r"fold_keras_batch_norms left \S*bn_second\S* \(AddV2\) as it was: it could not rewrite it "
                        r"\(ValueError: an unforeseen form\)", messages[0]), messages[0]
    assert count_ops(result)["Mul"] == count_ops(prepared)["Mul"] - 1  # the first batch norm folded, the second kept
    assert_same_outputs(case, result, EXACT)


def test_a_unit_the_rewrite_cannot_express_stays_fp32_and_the_rest_is_int8(monkeypatch):
    import keras

    model = small_cnn(keras)
    images = np.random.default_rng(1).random((64, 12, 12, 3), dtype=np.float32)
    def failing_depthwise(self, unit, lowering):
        raise ValueError("an unforeseen form")

    monkeypatch.setattr(DepthwiseConvolution, "lower", failing_depthwise)
    with pytest.warns(UserWarning, match=r"the int8 rewrite kept \S+ \(DepthwiseConv2dNative\) in fp32: it could not "
                                         r"express it in int8 \(ValueError: an unforeseen form\)"):
        qmodel = kquant.quantize(model, images, stem="int8", progress=False)
    ops = qmodel.op_counts()
    assert ops["_FusedQuantizedConv2D"] == 1 and ops["_QuantizedMatMul"] == 2 and ops["DepthwiseConv2dNative"] == 1
    assert "_FusedQuantizedDepthwiseConv2D" not in ops
    assert [u.family for u in qmodel.result.units if u.family in ("convolution", "depthwise")] == ["convolution"]
    assert close_in_steps(qmodel.predict(images), model.predict(images, verbose=0))


def two_dense_on_a_sequence():
    import keras

    keras.utils.set_random_seed(0)
    layers = keras.layers
    model = keras.Sequential([keras.Input((10, 12)), layers.Dense(16, activation="relu", name="first"),
                              layers.Dense(8, activation="tanh", name="second")])
    x = np.random.default_rng(0).standard_normal((3, 10, 12)).astype(np.float32)
    return Case(kquant.freeze(model), [x], [np.asarray(model(x))])


def two_einsum_dense():
    w1, b1, w2 = (tf.constant(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))
                  for seed, shape in enumerate([(4, 6), (6,), (6, 2, 3)]))
    return case_from_function(lambda x: tf.einsum("abc,cde->abde", tf.einsum("abc,cd->abd", x, w1, name="first") + b1, w2,
                                                  name="second"), (5, 4))


def two_reshape_pairs():
    def pairs(x):
        twice = [tf.reshape(tf.reshape(x, [-1, 12], name=f"{name}_flat"), [-1, 2, 6], name=f"{name}_back")
                 for name in ("first", "second")]
        return tf.concat(twice, axis=1)

    return case_from_function(pairs, (4, 3))


def two_dilated_convs():
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((12, 12, 3)), keras.layers.Conv2D(4, 3, dilation_rate=2, name="first"),
                              keras.layers.Conv2D(4, 3, dilation_rate=2, name="second")])
    x = np.random.default_rng(0).standard_normal((2, 12, 12, 3)).astype(np.float32)
    return Case(kquant.freeze(model), [x], [np.asarray(model(x))])


def conv1d_layers():
    """tf_keras (its 1-D poolings expand axis 2): two causal Conv1D with ReLU, two MaxPooling1D, a Conv1D."""
    keras = pytest.importorskip("tf_keras")
    keras.utils.set_random_seed(0)
    layers = keras.layers
    model = keras.Sequential([keras.Input((24, 5)), layers.Conv1D(6, 3, padding="causal", activation="relu", name="conv_a"),
                              layers.Conv1D(6, 3, padding="causal", activation="relu", name="conv_b"),
                              layers.MaxPooling1D(2, name="pool_a"), layers.MaxPooling1D(2, name="pool_b"),
                              layers.Conv1D(4, 1, name="conv_c")])
    x = np.random.default_rng(0).standard_normal((2, 24, 5)).astype(np.float32)
    return Case(kquant.freeze(model), [x], [np.asarray(model(x))])


def readers_of(graph, op: str, reader: str) -> int:
    """How many ``reader`` nodes read a node of type ``op``."""
    nodes = {n.name: n for n in graph.graph_def.node}
    return sum(n.op == reader and nodes[n.input[0].split(":")[0]].op == op for n in graph.graph_def.node)


def four_d_pads(graph) -> int:
    nodes = {n.name: n for n in graph.graph_def.node}
    return sum(n.op == "Pad" and nodes[n.input[1]].attr["value"].tensor.tensor_shape.dim[0].size == 4
               for n in graph.graph_def.node)


def turned_pools(graph) -> int:
    return sum(n.op == "MaxPool" and n.attr["ksize"].list.i[1] > 1 for n in graph.graph_def.node)


# transform (its module's name), the function that fails on the site, a pattern the site's name matches, the op
# of the node the warning names, the graph, what the transform changes at each site (a count)
DEGRADING = {
    "einsum": ("rewrite_einsum_dense_as_matmuls", "_as_matmul", "second", "Einsum", two_einsum_dense,
               lambda g: count_ops(g)["Einsum"]),
    "tensordot_shapes": ("fold_tensordot_shapes", "_constant_shapes", "second", "MatMul", two_dense_on_a_sequence,
                         lambda g: count_ops(g)["GatherV2"]),
    "redundant_reshapes": ("remove_redundant_reshapes", "_first_not_reshaped", "second", "Reshape", two_reshape_pairs,
                           lambda g: count_ops(g)["Reshape"]),
    "sink_reshapes": ("sink_tensordot_reshapes", "_sunk_below", "second[^/]*/Tensordot$", "Reshape", two_dense_on_a_sequence,
                      lambda g: readers_of(g, "MatMul", "BiasAdd")),
    "space_to_batch": ("fold_space_to_batch_convs", "_dilated_conv", "second", "BatchToSpaceND", two_dilated_convs,
                       lambda g: count_ops(g)["SpaceToBatchND"]),
    "conv1d_pools": ("fold_conv1d_squeezes", "_pools_over_axis_2", "pool_b", "MaxPool", conv1d_layers, turned_pools),
    "conv1d_pads": ("fold_conv1d_squeezes", "_expands_a_3d_pad", "conv_a", "ExpandDims", conv1d_layers, four_d_pads),
    "conv1d_squeezes": ("fold_conv1d_squeezes", "_movable", "conv_b", "Squeeze", conv1d_layers,
                        lambda g: readers_of(g, "Conv2D", "BiasAdd")),
    "conv1d_expand_dims": ("fold_conv1d_squeezes", "_restores_its_squeeze", "conv_b", "ExpandDims", conv1d_layers,
                           lambda g: count_ops(g)["ExpandDims"]),
}


@pytest.mark.parametrize("path", DEGRADING)
def test_a_rewrite_that_fails_on_one_site_leaves_it_and_rewrites_the_rest(path, monkeypatch):
    transform, function, site, op, make_case, changed = DEGRADING[path]
    module = importlib.import_module(f"kquant.transforms.rewrites.{transform}")
    case = make_case()
    prepared = apply_transforms(case.frozen, optimize_for_inference_trans[:optimize_for_inference_trans.index(transform)])
    whole = apply_transforms(prepared, [transform])
    real = getattr(module, function)

    def failing_on_one_site(node, *args):
        if re.search(site, node if isinstance(node, str) else node.name):
            raise ValueError("an unforeseen form")
        return real(node, *args)

    monkeypatch.setattr(module, function, failing_on_one_site)
    with pytest.warns(UserWarning) as caught:
        result = apply_transforms(prepared, [transform])
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages
    warning = re.fullmatch(rf"{transform} left (\S+) \({op}\) as it was: it could not rewrite it "
                           r"\(ValueError: an unforeseen form\)", messages[0])
    assert warning and re.search(site, warning[1]), messages[0]
    before, after, rest = changed(prepared), changed(whole), changed(result)
    assert min(before, after) < rest < max(before, after)  # every site but the failing one rewritten
    assert_same_outputs(case, result, EXACT)


def test_a_transform_of_the_optimize_list_that_fails_is_skipped_with_one_warning_and_the_rest_run(monkeypatch):
    from kquant.transforms import optimize_for_inference, python_transforms, stock

    case = keras3_bn_convs()
    real_call = stock._call

    def failing_stock(graph_def, specs, inputs, outputs):
        if any(spec.name == "fold_old_batch_norms" for spec in specs):
            raise kquant.errors.TransformError("fold_old_batch_norms failed in TensorFlow's graph transform tool: boom")
        return real_call(graph_def, specs, inputs, outputs)

    def failing_python(graph_def, context):
        raise ValueError("an unforeseen form")

    monkeypatch.setattr(stock, "_call", failing_stock)
    monkeypatch.setitem(python_transforms(), "fold_static_shapes", failing_python)
    with pytest.warns(UserWarning) as caught:
        result = optimize_for_inference(case.frozen)
    skipped = sorted(str(w.message).split(" ")[0] for w in caught if "was skipped" in str(w.message))
    assert skipped == ["fold_old_batch_norms", "fold_static_shapes"]
    assert count_ops(result)["FusedBatchNormV3"] == 0 and count_ops(result)["Mul"] == 0  # the other folds ran
    assert_same_outputs(case, result, 1e-5)
    with pytest.raises(kquant.errors.TransformError):  # a list the user gives still stops at the failure
        apply_transforms(case.frozen, ["fold_old_batch_norms"])
