"""The seed's three transform lists and kquant's own, on the fer model with real faces and on a Keras 3 BN CNN."""

import pytest

import kquant
from kquant.errors import TransformError
from kquant.operations import (fix_missing_kernel_errors_trans, get_fix_missing_kernel_errors_for_shape,
                               get_optimize_quantize_weights_for_shape, get_optimizing_for_deployment_for_shape,
                               optimize_quantize_weights_trans, optimizing_for_deployment_trans)
from kquant.transforms import optimize_for_inference, optimize_for_inference_trans

from .conftest import EXACT, QUANTIZED, assert_ops, count_ops, outputs_of, transformed

STRIP_299 = 'strip_unused_nodes(type=float, shape="1,299,299,3")'
FOLDS = ["fold_constants(ignore_errors=true)", "fold_batch_norms", "fold_old_batch_norms"]


def test_the_seed_lists_verbatim():
    assert optimizing_for_deployment_trans == [STRIP_299, "remove_nodes(op=Identity, op=CheckNumerics)", *FOLDS]
    assert fix_missing_kernel_errors_trans == [STRIP_299, *FOLDS]
    assert optimize_quantize_weights_trans == [STRIP_299, *FOLDS, "quantize_weights"]


@pytest.mark.parametrize("shape", ['"1,300,300,3"', "1,300,300,3", (1, 300, 300, 3), [1, 300, 300, 3]])
def test_shapes_in_every_spelling(shape):
    assert get_optimizing_for_deployment_for_shape(shape) == [
        'strip_unused_nodes(type=float, shape="1,300,300,3")', "remove_nodes(op=Identity, op=CheckNumerics)", *FOLDS]
    assert get_fix_missing_kernel_errors_for_shape(shape)[0] == 'strip_unused_nodes(type=float, shape="1,300,300,3")'
    assert get_optimize_quantize_weights_for_shape(shape)[-1] == "quantize_weights"


def test_a_bad_shape_shows_the_right_spelling():
    with pytest.raises(TransformError, match=r"pass e.g. '\"1,300,300,3\"' or \(1, 300, 300, 3\)"):
        get_optimizing_for_deployment_for_shape("1x300x300x3")


def test_operations_is_reachable_from_kquant():
    assert kquant.operations.optimizing_for_deployment_trans == optimizing_for_deployment_trans


# list -> (transforms, tolerance, batch-norm Muls left on fer)
SEED_LISTS = {
    # remove_nodes(op=Identity) moves the freeze's NoOp control edges onto the weights: fold_batch_norms then skips them
    "deployment": (get_optimizing_for_deployment_for_shape("1,64,64,1"), EXACT, 14),
    "fix_missing_kernel_errors": (get_fix_missing_kernel_errors_for_shape((1, 64, 64, 1)), EXACT, 0),
    "quantize_weights": (get_optimize_quantize_weights_for_shape("1,64,64,1"), QUANTIZED, 0),
}


@pytest.mark.parametrize("name", sorted(SEED_LISTS))
def test_seed_lists_on_fer_with_real_faces(fer_case, name):
    transforms, tolerance, muls = SEED_LISTS[name]
    result = transformed(fer_case, transforms, tolerance)
    assert_ops(result, Rsqrt=0, Squeeze=0, Mul=muls, AddV2=18)
    if name == "quantize_weights":
        assert count_ops(result)["Dequantize"] > 0
    assert (outputs_of(result, fer_case.inputs)[0].argmax(1) == fer_case.expected[0].argmax(1)).all()


def test_optimize_for_inference_on_fer(fer_case):
    result = transformed(fer_case, optimize_for_inference_trans)
    assert optimize_for_inference(fer_case.frozen) == result
    assert result.inputs == fer_case.frozen.inputs and result.outputs == fer_case.frozen.outputs
    assert_ops(result, Identity=1, NoOp=0, Mul=0, Sub=0, Rsqrt=0, BiasAdd=15, AddV2=4, Conv2D=15, DepthwiseConv2dNative=8)
    assert kquant.summarize_graph(result).control_edges == 0
    assert (outputs_of(result, fer_case.inputs)[0].argmax(1) == fer_case.expected[0].argmax(1)).all()


@pytest.mark.parametrize("name", sorted(SEED_LISTS))
def test_seed_lists_on_a_keras3_bn_cnn(bn_cnn_case, name):
    transforms, tolerance, _ = SEED_LISTS[name]
    transformed(bn_cnn_case, [t.replace("1,64,64,1", "1,16,16,3") for t in transforms], tolerance)


def test_optimize_for_inference_on_a_keras3_bn_cnn(bn_cnn_case):
    result = transformed(bn_cnn_case, optimize_for_inference_trans)
    # the ZeroPadding2D stays a Pad before the SeparableConv2D's depthwise conv (the int8 op folds it)
    assert_ops(result, Mul=0, AddV2=0, Pad=1, Shape=0, Pack=0, StridedSlice=0, NoOp=0, BiasAdd=4, Identity=1)
    assert len(result.graph_def.node) < len(bn_cnn_case.frozen.graph_def.node) / 3
