"""fold_keras_batch_norms: Keras 3's Mul/Add and tf_keras's FusedBatchNormV3 folded into Conv2D, depthwise and Dense."""

import numpy as np
import pytest
import tensorflow as tf

import kquant
from kquant.errors import GraphRunError
from kquant.transforms import optimize_for_inference_trans

from .conftest import Case, assert_ops, case_from_function, constant, count_ops, outputs_of, randomize_batch_norms, transformed

PREPARE = ["remove_freeze_leftovers", "fold_constants(ignore_errors=true)"]


def test_keras3_conv_depthwise_separable_and_dense_batch_norms_fold(bn_cnn_case):
    prepared = transformed(bn_cnn_case, PREPARE)
    assert_ops(prepared, Mul=4, AddV2=4, BiasAdd=3)  # one Mul and one AddV2 per BatchNormalization
    result = transformed(bn_cnn_case, PREPARE + ["fold_keras_batch_norms"])
    assert_ops(result, Mul=0, AddV2=0, BiasAdd=4, Conv2D=2, DepthwiseConv2dNative=2, MatMul=1)


def test_tf_keras_fused_batch_norms_fold():
    import tf_keras

    layers = tf_keras.layers
    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential([layers.Conv2D(4, 3, input_shape=(8, 8, 3)), layers.BatchNormalization(),
                                 layers.DepthwiseConv2D(3, use_bias=False), layers.BatchNormalization(),
                                 layers.Flatten(), layers.Dense(3), layers.BatchNormalization()])
    randomize_batch_norms(model)
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 3)).astype(np.float32)
    case = Case(kquant.freeze(model), [x], [model(x, training=False).numpy()])
    assert_ops(case.frozen, FusedBatchNormV3=2)
    result = transformed(case, PREPARE + ["fold_keras_batch_norms"])
    assert_ops(result, FusedBatchNormV3=0, Mul=0, AddV2=0, BiasAdd=3)


def test_an_add_left_by_the_stock_fold_becomes_the_bias():
    case = case_from_function(lambda x: tf.nn.conv2d(x, constant(3, 3, 3, 4), 1, "SAME") * constant(4, seed=1) + constant(4, seed=2), (6, 6, 3))
    stock = transformed(case, "fold_batch_norms")
    assert_ops(stock, Mul=0, AddV2=1)
    assert_ops(transformed(case, "fold_batch_norms fold_keras_batch_norms"), AddV2=0, BiasAdd=1)


def test_a_conv_also_read_elsewhere_is_left_alone():
    def shared(x):
        y = tf.nn.conv2d(x, constant(3, 3, 3, 4), 1, "SAME")
        return y * constant(4, seed=1) + constant(4, seed=2) + tf.nn.relu(y)

    case = case_from_function(shared, (6, 6, 3))
    assert count_ops(transformed(case, "fold_keras_batch_norms")) == count_ops(case.frozen)


def test_a_shift_that_is_not_per_channel_is_left_alone():
    case = case_from_function(lambda x: tf.nn.conv2d(x, constant(3, 3, 3, 4), 1, "SAME") * 2.0 + constant(6, 6, 4, seed=2), (6, 6, 3))
    assert_ops(transformed(case, "fold_keras_batch_norms"), Mul=0, AddV2=1)  # the scale alone folds


def test_a_control_edge_on_the_batch_norm_moves_to_the_folded_bias():
    def checked(x):
        y = tf.nn.conv2d(x, constant(3, 3, 3, 4), 1, "SAME")
        with tf.control_dependencies([tf.debugging.Assert(tf.reduce_all(tf.math.is_finite(x)), [x])]):
            scaled = y * constant(4, seed=1)
        return scaled + constant(4, seed=2)

    case = case_from_function(checked, (6, 6, 3))
    result = transformed(case, "remove_freeze_leftovers fold_keras_batch_norms")
    assert_ops(result, Mul=0, BiasAdd=1, Assert=1)
    bias_add = next(node for node in result.graph_def.node if node.op == "BiasAdd")
    assert any(inp.startswith("^") for inp in bias_add.input)
    bad = [np.full((1, 6, 6, 3), np.nan, np.float32)]
    try:
        outputs_of(result, bad)
    except GraphRunError as exc:
        assert "assertion failed" in str(exc)
    else:
        raise AssertionError("the Assert no longer guards the output")


@pytest.mark.parametrize("library", ["keras", "tf_keras"])
def test_biasless_conv_with_batch_norm_on_axis_3_folds_exactly_and_quantizes(library):
    """DenseNet121 and InceptionV3 build Conv2D(use_bias=False) + BatchNormalization(axis=3): Keras 3 freezes its
    scale as [1, 1, 1, C], which the stock fold_batch_norms rejected; kquant's list runs this fold first."""
    keras = pytest.importorskip(library)
    layers = keras.layers
    keras.utils.set_random_seed(0)
    image = keras.Input((10, 10, 3))
    x = layers.Conv2D(8, 3, use_bias=False)(image)
    x = layers.Activation("relu")(layers.BatchNormalization(axis=3)(x))
    x = layers.Conv2D(8, 3, padding="same", use_bias=False)(x)
    x = layers.Activation("relu")(layers.BatchNormalization(axis=3)(x))
    model = keras.Model(image, layers.Dense(3)(layers.GlobalAveragePooling2D()(x)))
    randomize_batch_norms(model)
    x = np.random.default_rng(0).standard_normal((16, 10, 10, 3)).astype(np.float32)
    case = Case(kquant.freeze(model), [x], [np.asarray(model(x, training=False))])
    result = transformed(case, optimize_for_inference_trans)
    assert_ops(result, Mul=0, AddV2=0, FusedBatchNormV3=0, Conv2D=2, BiasAdd=3)
    q = kquant.quantize(model, x, progress=False, stem="int8")
    assert q.op_counts().get("_FusedQuantizedConv2D", 0) == 2
    assert np.abs(q.predict(x) - case.expected[0]).max() <= 0.1 * np.abs(case.expected[0]).max()


def test_a_lone_mul_after_a_conv_folds_into_its_weights():
    case = case_from_function(lambda x: tf.nn.conv2d(x, constant(3, 3, 3, 4), 1, "SAME") * tf.reshape(constant(4, seed=1), [1, 1, 1, 4]),
                              (6, 6, 3))
    assert_ops(transformed(case, PREPARE + ["fold_keras_batch_norms"]), Mul=0, BiasAdd=1, Conv2D=1)
