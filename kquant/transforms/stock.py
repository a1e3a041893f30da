"""The stock transforms: TensorFlow's C++ Graph Transform Tool, as shipped in the wheel, called in-process."""

from __future__ import annotations

import warnings

from tensorflow.core.framework import graph_pb2
from tensorflow.python.util._pywrap_transform_graph import TransformGraphWithStringInputs

from kquant.errors import TransformError, first_line
from kquant.graph import parse_graph_def

# Every transform the C++ tool in TensorFlow 2.21 registers. Found by passing each identifier-like
# string of libtensorflow_cc.so.2 (plus the names in the tool's README) to TransformGraphWithStringInputs:
# the tool answers "Transform '...' not recognized." for anything else (tests/transforms/test_stock.py checks the list).
STOCK_TRANSFORMS = (
    "add_default_attributes",
    "backport_concatv2",
    "backport_tensor_array_v3",
    "flatten_atrous_conv",
    "fold_batch_norms",
    "fold_constants",
    "fold_old_batch_norms",
    "freeze_requantization_ranges",
    "fuse_pad_and_conv",
    "fuse_resize_and_conv",
    "fuse_resize_pad_and_conv",
    "inline_partitionedcall",
    "insert_logging",
    "merge_duplicate_nodes",
    "obfuscate_names",
    "quantize_nodes",
    "quantize_weights",
    "remove_attribute",
    "remove_control_dependencies",
    "remove_device",
    "remove_nodes",
    "rename_attribute",
    "rename_node",
    "rename_op",
    "round_weights",
    "set_device",
    "sort_by_execution_order",
    "sparsify_gather",
    "strip_unused_nodes",
)

# The arguments each stock transform reads (from the tool's sources and README), with the kind of value each takes;
# ignore_errors (every transform) is added by ``declared_parameters``.
STOCK_PARAMETERS = {
    "fold_constants": {"clear_output_shapes": "bool", "exclude_op": "string", "exclude_node": "string",
                       "max_constant_size_in_bytes": "int"},
    "freeze_requantization_ranges": {"min_max_log_file": "string", "min_percentile": "float", "max_percentile": "float"},
    "insert_logging": {"op": "string", "prefix": "string", "show_op": "bool", "show_name": "bool", "message": "string",
                       "first_n": "int", "summarize": "int"},
    "quantize_nodes": {"input_min": "float", "input_max": "float", "fallback_min": "float", "fallback_max": "float"},
    "quantize_weights": {"minimum_size": "int"},
    "remove_attribute": {"attribute_name": "string", "op_name": "string"},
    "remove_nodes": {"op": "string"},
    "rename_attribute": {"old_attribute_name": "string", "new_attribute_name": "string", "op_name": "string"},
    "rename_node": {"old_node_name": "string", "new_node_name": "string"},
    "rename_op": {"old_op_name": "string", "new_op_name": "string"},
    "round_weights": {"num_steps": "int"},
    "set_device": {"device": "string", "if_default": "bool"},
    "sparsify_gather": {"input_checkpoint": "string"},
    "strip_unused_nodes": {"type": "dtype", "shape": "shape", "name": "string", "type_for_name": "dtype",
                           "shape_for_name": "shape"},
}

# Measured with TensorFlow 2.21: the fused kernels these transforms emit compute wrong results.
CAVEATS = {
    "fuse_pad_and_conv": "TensorFlow's FusedPadConv2D kernel is wrong for batches larger than 1",
    "fuse_resize_and_conv": "TensorFlow's FusedResizeAndPadConv2D kernel is wrong for batches larger than 1 "
                            "and ignores half_pixel_centers=True (TF2's tf.image.resize, Keras Resizing/UpSampling2D)",
    "fuse_resize_pad_and_conv": "TensorFlow's FusedResizeAndPadConv2D kernel is wrong for batches larger than 1 "
                                "and ignores half_pixel_centers=True (TF2's tf.image.resize, Keras Resizing/UpSampling2D)",
}

def run_stock(graph_def: graph_pb2.GraphDef, specs, inputs, outputs, *, skip_failing=False) -> graph_pb2.GraphDef:
    """Run consecutive stock transforms in one call of the C++ tool; a failure names the transform that failed,
    or with ``skip_failing`` skips it with one warning (the others still run)."""
    for spec in specs:
        if spec.name in CAVEATS:
            warnings.warn(f"{spec.name}: {CAVEATS[spec.name]}; check the outputs (mkl_fuse_pad_and_conv folds zero "
                          "padding safely)", stacklevel=2)
    try:
        return _call(graph_def, specs, inputs, outputs)
    except TransformError:
        if len(specs) == 1 and not skip_failing:
            raise
    for spec in specs:  # rerun one at a time to name the culprit
        try:
            graph_def = _call(graph_def, [spec], inputs, outputs)
        except TransformError as exc:
            if not skip_failing:
                raise
            warnings.warn(f"{spec.name} failed and was skipped (the graph keeps its function without it): "
                          f"{first_line(exc)}", stacklevel=3)
    return graph_def


def _call(graph_def, specs, inputs, outputs) -> graph_pb2.GraphDef:
    text = " ".join(str(spec) for spec in specs)
    try:
        data = TransformGraphWithStringInputs(
            graph_def.SerializeToString(), ",".join(inputs).encode(), ",".join(outputs).encode(), text.encode()
        )
    except (ValueError, RuntimeError) as exc:
        where = specs[0].where() if len(specs) == 1 else f"one of {text}"
        raise TransformError(f"{where} failed in TensorFlow's graph transform tool: {first_line(exc)}") from exc
    return parse_graph_def(data, text=False, source=f"the result of {text}")
