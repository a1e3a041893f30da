"""Ready-made transform lists: ModelQuantization's three (verbatim) and kquant's own for Keras graphs before int8.

The seed lists are those of ModelQuantization's ``quantization/operations.py``, which match the recipes of the
Graph Transform Tool README ("Optimizing for Deployment", "Fixing Missing Kernel Errors on Mobile",
"Shrinking File Size" with quantize_weights). The default shape is "1,299,299,3" (Inception v3).
"""

from __future__ import annotations

import re

from kquant.errors import TransformError

DEFAULT_SHAPE = '"1,299,299,3"'


def _shape_arg(shape) -> str:
    """'"1,300,300,3"', '1,300,300,3', (1, 300, 300, 3) or [1, 300, 300, 3] -> '"1,300,300,3"'."""
    if isinstance(shape, str):
        dims = shape.strip().strip('"').replace(" ", "").split(",")
    else:
        dims = [str(d) for d in shape]
    if not dims or not all(re.fullmatch(r"-?\d+", d) for d in dims):
        raise TransformError(f"shape {shape!r} is not a list of integers; pass e.g. '\"1,300,300,3\"' or (1, 300, 300, 3)")
    return '"' + ",".join(dims) + '"'


def get_optimizing_for_deployment_for_shape(shape) -> list[str]:
    """Remove training-only nodes, fold constants and batch norms (strip_unused_nodes gets ``shape``)."""
    return [f"strip_unused_nodes(type=float, shape={_shape_arg(shape)})",
            "remove_nodes(op=Identity, op=CheckNumerics)",
            "fold_constants(ignore_errors=true)",
            "fold_batch_norms",
            "fold_old_batch_norms"]


def get_fix_missing_kernel_errors_for_shape(shape) -> list[str]:
    """Strip the nodes inference does not need, whose kernels a mobile build may lack; fold constants and batch norms."""
    return [f"strip_unused_nodes(type=float, shape={_shape_arg(shape)})",
            "fold_constants(ignore_errors=true)",
            "fold_batch_norms",
            "fold_old_batch_norms"]


def get_optimize_quantize_weights_for_shape(shape) -> list[str]:
    """The fix-missing-kernel list plus quantize_weights: weights stored as 8-bit, about 4x smaller."""
    return get_fix_missing_kernel_errors_for_shape(shape) + ["quantize_weights"]


optimizing_for_deployment_trans = get_optimizing_for_deployment_for_shape(DEFAULT_SHAPE)
fix_missing_kernel_errors_trans = get_fix_missing_kernel_errors_for_shape(DEFAULT_SHAPE)
optimize_quantize_weights_trans = get_optimize_quantize_weights_for_shape(DEFAULT_SHAPE)

# a Dense on a sequence and an EinsumDense as MatMul -> bias -> activation (also runnable as fold_tensordot_matmuls)
fold_tensordot_matmuls_trans = [
    "rewrite_einsum_dense_as_matmuls",
    "fold_tensordot_shapes",
    "remove_redundant_reshapes",
    "sink_tensordot_reshapes",
    "remove_redundant_reshapes",
]

# kquant's list for frozen Keras 3 / tf_keras graphs before int8 quantization: the deployment list with the
# freezing leftovers removed first (they block the stock folds) and the folds the stock tool cannot do.
optimize_for_inference_trans = [
    "remove_freeze_leftovers",
    "inline_conv_calls",
    "strip_unused_nodes",
    "remove_nodes(op=Identity, op=CheckNumerics)",
    "fold_constants(ignore_errors=true)",
    "fold_space_to_batch_convs",
    "fold_conv1d_squeezes",
    *fold_tensordot_matmuls_trans,
    "fold_keras_batch_norms",
    "fold_batch_norms",
    "fold_old_batch_norms",
    "fold_subdivmul_batch_norms",
    "fold_convolutionwithbias_mul",
    "fold_keras_batch_norms",
    "fold_static_shapes",
    "mkl_fuse_pad_and_conv",
    "remove_freeze_leftovers",
    "sort_by_execution_order",
]
