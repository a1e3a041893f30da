"""The C++ tool's transforms through kquant: every registered one runs, keeps the outputs and does its job."""

import numpy as np
import pytest
import tensorflow as tf

import kquant

from kquant.errors import TransformError
from kquant.transforms import STOCK_TRANSFORMS, apply_transforms
from kquant.transforms import apply as apply_module
from tensorflow.python.util._pywrap_transform_graph import TransformGraphWithStringInputs

from .conftest import EXACT, QUANTIZED, Case, assert_same_outputs, case_from_function, constant, count_ops, outputs_of

PADS = [[0, 0], [1, 1], [1, 1], [0, 0]]


def many_ops(x):
    """One branch per stock rewrite: MirrorPad/resize before convs, atrous conv, Mul after conv, old batch norm, ..."""
    mirror = tf.nn.conv2d(tf.pad(x, PADS, "REFLECT"), constant(3, 3, 3, 4, seed=1), 1, "VALID")
    resized = tf.nn.conv2d(tf.compat.v1.image.resize_bilinear(x, [16, 16]), constant(3, 3, 3, 4, seed=2), 2, "SAME")
    atrous = tf.compat.v1.batch_to_space_nd(
        tf.nn.conv2d(tf.compat.v1.space_to_batch_nd(x, [2, 2], [[2, 2], [2, 2]]), constant(3, 3, 3, 4, seed=3), 1, "VALID"),
        [2, 2], [[0, 0], [0, 0]])
    scaled = tf.nn.conv2d(x, constant(3, 3, 3, 4, seed=4), 1, "SAME") * (constant(4, seed=5) + constant(4, seed=6))
    normed = tf.raw_ops.FusedBatchNorm(  # the old op: the stock fold_old_batch_norms ignores FusedBatchNormV3
        x=tf.nn.conv2d(x, constant(3, 3, 3, 4, seed=7), 1, "SAME"), scale=constant(4, seed=8), offset=constant(4, seed=9),
        mean=constant(4, seed=10), variance=constant(4, seed=11, low=0.5), is_training=False).y
    resized_padded = tf.nn.conv2d(tf.pad(tf.compat.v1.image.resize_bilinear(x, [16, 16]), PADS, "REFLECT"),
                                  constant(3, 3, 3, 4, seed=12), 2, "VALID")
    y = tf.debugging.check_numerics(tf.concat([mirror, resized, atrous, scaled, normed, resized_padded], axis=3), "bad")
    with tf.control_dependencies([tf.sin(x)]):
        return tf.identity(y + constant(24, seed=13), name="out")


@pytest.fixture(scope="module")
def case() -> Case:
    """many_ops frozen, plus a node no output needs (freezing prunes those, so it is added by hand)."""
    case = case_from_function(many_ops, (8, 8, 3))
    unused = case.frozen.graph_def.node.add(name="unused", op="Cos", input=["x0"])
    unused.attr["T"].type = tf.float32.as_datatype_enum
    return case


def names(graph):
    return {node.name for node in graph.graph_def.node}


def devices(graph):
    return {node.device for node in graph.graph_def.node}


def attrs(graph, op):
    return {key for node in graph.graph_def.node if node.op == op for key in node.attr}


def control_edges(graph):
    return sum(inp.startswith("^") for node in graph.graph_def.node for inp in node.input)


def executes_in_order(graph):
    seen = set()
    for node in graph.graph_def.node:
        if any(inp.lstrip("^").split(":")[0] not in seen for inp in node.input):
            return False
        seen.add(node.name)
    return True


def distinct_filter_values(graph):
    """The most distinct values any conv filter holds."""
    consts = {n.name: n for n in graph.graph_def.node if n.op == "Const"}
    filters = [consts[n.input[1]] for n in graph.graph_def.node if n.op == "Conv2D" and n.input[1] in consts]
    return max(len(np.unique(tf.make_ndarray(f.attr["value"].tensor))) for f in filters)


# transform -> (transform string, tolerance, check(before op counts, after graph)); see test_fused_kernels for the fuse_* ones
STOCK_CASES = {
    "add_default_attributes": ("add_default_attributes", EXACT, lambda c, g: count_ops(g) == c),
    "backport_concatv2": ("backport_concatv2", EXACT, lambda c, g: count_ops(g)["ConcatV2"] == 0 and count_ops(g)["Concat"] == 1),
    "backport_tensor_array_v3": ("backport_tensor_array_v3", EXACT, lambda c, g: count_ops(g) == c),
    "flatten_atrous_conv": ("flatten_atrous_conv", EXACT, lambda c, g: count_ops(g)["SpaceToBatchND"] == 0 == count_ops(g)["BatchToSpaceND"]),
    "fold_batch_norms": ("fold_constants fold_batch_norms", EXACT, lambda c, g: count_ops(g)["Mul"] == c["Mul"] - 1),
    "fold_constants": ("fold_constants(ignore_errors=true)", EXACT, lambda c, g: count_ops(g)["AddV2"] == c["AddV2"] - 1),
    "fold_old_batch_norms": ("fold_old_batch_norms", EXACT, lambda c, g: count_ops(g)["FusedBatchNorm"] == 0),
    "inline_partitionedcall": ("inline_partitionedcall", EXACT, lambda c, g: count_ops(g) == c),
    "insert_logging": ("insert_logging(op=Conv2D, first_n=1, summarize=1)", EXACT, lambda c, g: count_ops(g)["Print"] == c["Conv2D"]),
    "merge_duplicate_nodes": ("merge_duplicate_nodes", EXACT, lambda c, g: count_ops(g)["ResizeBilinear"] == c["ResizeBilinear"] - 1),
    "obfuscate_names": ("obfuscate_names", EXACT, lambda c, g: {"x0", "Identity"} <= names(g) and "unused" not in names(g)),
    "quantize_nodes": ("quantize_nodes", QUANTIZED, lambda c, g: count_ops(g)["QuantizedConv2D"] > 0),
    "quantize_weights": ("quantize_weights(minimum_size=16)", QUANTIZED, lambda c, g: count_ops(g)["Dequantize"] > 0),
    "remove_attribute": ("remove_attribute(op_name=Conv2D, attribute_name=use_cudnn_on_gpu)", EXACT,
                         lambda c, g: "use_cudnn_on_gpu" not in attrs(g, "Conv2D")),
    "remove_control_dependencies": ("remove_control_dependencies", EXACT, lambda c, g: control_edges(g) == 0),
    "remove_device": ("set_device(device=/device:CPU:0) remove_device", EXACT, lambda c, g: devices(g) == {""}),
    "remove_nodes": ("remove_nodes(op=Identity, op=CheckNumerics)", EXACT, lambda c, g: count_ops(g)["CheckNumerics"] == 0),
    "rename_attribute": ("rename_attribute(op_name=Conv2D, old_attribute_name=use_cudnn_on_gpu, new_attribute_name=kquant) "
                         "rename_attribute(op_name=Conv2D, old_attribute_name=kquant, new_attribute_name=use_cudnn_on_gpu)", EXACT,
                         lambda c, g: "use_cudnn_on_gpu" in attrs(g, "Conv2D") and "kquant" not in attrs(g, "Conv2D")),
    "rename_node": ("rename_node(old_node_name=unused, new_node_name=renamed)", EXACT,
                    lambda c, g: "renamed" in names(g) and "unused" not in names(g)),
    "rename_op": ("rename_op(old_op_name=AddV2, new_op_name=Add)", EXACT, lambda c, g: count_ops(g)["AddV2"] == 0 < count_ops(g)["Add"]),
    "round_weights": ("round_weights(num_steps=16)", 0.2, lambda c, g: distinct_filter_values(g) <= 17),  # 16 steps, 17 levels
    "set_device": ("set_device(device=/device:CPU:0)", EXACT, lambda c, g: devices(g) == {"/device:CPU:0"}),
    "sort_by_execution_order": ("sort_by_execution_order", EXACT, lambda c, g: executes_in_order(g)),
    "sparsify_gather": ("sparsify_gather", EXACT, lambda c, g: count_ops(g)["Conv2D"] == c["Conv2D"]),
    "strip_unused_nodes": ("strip_unused_nodes", EXACT, lambda c, g: count_ops(g)["Cos"] == 0),
}
FUSED = ("fuse_pad_and_conv", "fuse_resize_and_conv", "fuse_resize_pad_and_conv")  # test_fused_kernels_...
CALIBRATED = ("freeze_requantization_ranges",)  # test_freeze_requantization_ranges_...


def test_every_registered_transform_is_listed_and_covered():
    graph = tf.Graph().as_graph_def()
    for name in STOCK_TRANSFORMS:
        try:
            TransformGraphWithStringInputs(graph.SerializeToString(), b"", b"", name.encode())
        except (ValueError, RuntimeError) as exc:
            assert "not recognized" not in str(exc)
    with pytest.raises(ValueError, match="not recognized"):
        TransformGraphWithStringInputs(graph.SerializeToString(), b"", b"", b"fuse_convolutions")
    assert set(STOCK_CASES) | set(FUSED) | set(CALIBRATED) == set(STOCK_TRANSFORMS)


@pytest.mark.parametrize("name", sorted(STOCK_CASES))
def test_stock_transform_keeps_outputs_and_does_its_job(case, name):
    text, tolerance, check = STOCK_CASES[name]
    result = apply_transforms(case.frozen, text)
    assert check(count_ops(case.frozen), result)  # first: running a graph adds default attributes to its GraphDef
    assert_same_outputs(case, result, tolerance)


@pytest.mark.parametrize("name, op", [("fuse_pad_and_conv", "FusedPadConv2D"), ("fuse_resize_and_conv", "FusedResizeAndPadConv2D"),
                                      ("fuse_resize_pad_and_conv", "FusedResizeAndPadConv2D")])
def test_fused_kernels_are_right_for_batch_1_only(case, name, op):
    with pytest.warns(UserWarning, match="wrong for batches larger than 1"):  # TF 2.21's fused kernels: see CAVEATS
        result = apply_transforms(case.frozen, name)
    assert count_ops(result)[op] >= 1
    one = [case.inputs[0][:1]]
    assert np.abs(outputs_of(result, one)[0] - outputs_of(case.frozen, one)[0]).max() <= EXACT * np.abs(case.expected[0]).max()


def test_freeze_requantization_ranges_with_ranges_logged_on_the_inputs(case, tmp_path):
    quantized = apply_transforms(case.frozen, "quantize_nodes")
    ranges = [n.name for n in quantized.graph_def.node if n.op == "RequantizationRange"]
    with kquant.GraphRunner(quantized.graph_def, quantized.input_names, [f"{n}:{i}" for n in ranges for i in (0, 1)]) as run:
        values = run(*case.inputs)
    log = tmp_path / "minmax.txt"
    log.write_text("".join(f";{n}__print__;__requant_min_max:[{lo}][{hi}]\n" for n, lo, hi in zip(ranges, values[::2], values[1::2])))
    frozen = apply_transforms(quantized, f"freeze_requantization_ranges(min_max_log_file={log})")
    assert count_ops(frozen)["RequantizationRange"] == 0 < count_ops(quantized)["RequantizationRange"]
    assert_same_outputs(case, frozen, QUANTIZED)


def test_consecutive_stock_transforms_run_in_one_call(case, monkeypatch):
    calls = []
    real = apply_module.run_stock
    monkeypatch.setattr(apply_module, "run_stock", lambda g, specs, i, o, **kw: calls.append([s.name for s in specs]) or real(g, specs, i, o, **kw))
    apply_transforms(case.frozen, "remove_freeze_leftovers strip_unused_nodes fold_constants fold_batch_norms "
                                  "fold_keras_batch_norms sort_by_execution_order")
    assert calls == [["strip_unused_nodes", "fold_constants", "fold_batch_norms"], ["sort_by_execution_order"]]


def test_cpp_errors_become_transform_errors_naming_the_transform(case):
    with pytest.raises(TransformError, match=r"'rename_op' at character 15 .*expects exactly one 'old_op_name' and 'new_op_name'"):
        apply_transforms(case.frozen, "fold_constants rename_op(old_op_name=Mul) sort_by_execution_order")
    with pytest.raises(TransformError, match="'freeze_requantization_ranges'.*min_max_log_file"):
        apply_transforms(case.frozen, ["freeze_requantization_ranges"])
