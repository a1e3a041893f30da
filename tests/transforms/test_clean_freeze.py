"""Clean freezes: ``freeze`` and ``save_keras_model_to_pb`` hand back graphs without the freeze's NoOp and control
edges (outputs bit-identical), so the seed's three transform lists fold Keras 3 and tf_keras batch norms."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

import kquant
from kquant import operations

from ..conftest import randomize_weights, run_frozen

LISTS = ("optimizing_for_deployment", "fix_missing_kernel_errors", "optimize_quantize_weights")


def bn_cnn(k):
    """Two conv -> BatchNormalization blocks (convs without bias, as before a batch norm) and a softmax head."""
    k.utils.set_random_seed(0)
    image = k.Input((12, 12, 3), name="image")
    x = k.layers.Conv2D(4, 3, use_bias=False, name="conv1")(image)
    x = k.layers.ReLU()(k.layers.BatchNormalization(name="bn1")(x))
    x = k.layers.Conv2D(4, 3, use_bias=False, name="conv2")(x)
    x = k.layers.BatchNormalization(name="bn2")(x)
    probs = k.layers.Dense(3, activation="softmax", name="probs")(k.layers.Flatten()(x))
    model = k.Model(image, probs)
    randomize_weights(model, 0)
    return model


@pytest.fixture(scope="module", params=[keras, tf_keras], ids=["keras3", "tf_keras"])
def model(request):
    return bn_cnn(request.param)


def test_freeze_drops_the_noop_and_its_control_edges_and_keeps_every_value(model):
    frozen = kquant.freeze(model)
    summary = kquant.summarize_graph(frozen)
    assert summary.control_edges == 0 and "NoOp" not in summary.op_counts
    specs = [tf.TensorSpec((None, 12, 12, 3), tf.float32, name="image")]
    raw = convert_variables_to_constants_v2(tf.function(lambda x: model(x, training=False)).get_concrete_function(*specs))
    assert kquant.summarize_graph(raw.graph.as_graph_def()).control_edges > 0  # what TF's freeze alone leaves
    x = np.random.default_rng(1).normal(size=(3, 12, 12, 3)).astype(np.float32)
    assert np.array_equal(run_frozen(frozen, x)[0], raw(tf.constant(x))[0].numpy())


@pytest.mark.parametrize("name", LISTS)
def test_the_seed_lists_fold_the_batch_norms(model, name, tmp_path):
    path = kquant.save_keras_model_to_pb(tmp_path, "model.pb", model)
    out = kquant.transform_graph(path, tmp_path, "out.pb", "image", "output_node0",
                                 getattr(operations, f"get_{name}_for_shape")("1,12,12,3"))
    ops = kquant.summarize_graph(out).op_counts
    assert not {"Mul", "Rsqrt", "FusedBatchNorm", "FusedBatchNormV3", "NoOp"} & set(ops), ops
    assert ops["Conv2D"] == 2
    x = np.random.default_rng(2).normal(size=(2, 12, 12, 3)).astype(np.float32)
    folded = kquant.freeze(out)
    expected = model(x, training=False)
    tolerance = 0.05 if name == "optimize_quantize_weights" else 1e-5  # 8-bit weights
    np.testing.assert_allclose(run_frozen(folded, x)[0], np.asarray(expected), atol=tolerance)
