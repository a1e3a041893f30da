"""fold_subdivmul_batch_norms: fold Sub/RealDiv/Mul/Add-by-constant chains after or in front of a conv into its weights and bias.

After Conv2D, DepthwiseConv2dNative or MatMul (optionally with its BiasAdd): Intel's pattern
Sub(mean) -> RealDiv(std) -> Mul(gamma) -> BiasAdd/Add(beta) and its shorter forms become
conv(x, W') -> BiasAdd(b'). In front of one: an input normalization such as Keras's Normalization layer,
(x - mean) / std, or Rescaling, x * scale + offset, is folded into the weights (scale per input channel)
and a bias (the offset pushed through W). The offset is only exact without padding, so a conv with
SAME padding takes a chain that has one only if the offset is zero.
"""

from __future__ import annotations

import numpy as np
from tensorflow.core.framework import node_def_pb2

from kquant.graphdef import const_node, const_value, data_format, output_channels
from kquant.transforms.folding import BIASED_CONV, CONV, CONV_OPS, channel_vector, conv_bias, fold_affine_into_conv
from kquant.transforms.pattern import P, replace_matching
from kquant.transforms.registry import register

AFTER_CHAINS = (("Sub", "RealDiv", "Mul", "BiasAdd|Add|AddV2"), ("Sub", "RealDiv", "Mul"), ("Sub", "RealDiv"))
FRONT_CHAINS = (("Sub", "RealDiv", "Mul"), ("Sub", "RealDiv"), ("Sub", "Mul"), ("Mul", "Add|AddV2"), ("Sub",), ("RealDiv",), ("Mul",))
COMMUTATIVE = ("Mul", "Add|AddV2")


def _chain(ops, start):
    """start -> ops[0](const c0) -> ops[1](const c1) -> ...; the steps are labelled step0, step1, ..."""
    node = start
    for i, op in enumerate(ops):
        node = P(op, f"step{i}", node, P("Const", f"c{i}"), commutative=op in COMMUTATIVE)
    return node


AFTER = tuple(_chain(ops, base) for ops in AFTER_CHAINS for base in (BIASED_CONV, CONV))
FRONT = tuple(P(CONV_OPS, "conv", _chain(ops, P("*", "x")), P("Const", "weights")) for ops in FRONT_CHAINS)


@register("fold_subdivmul_batch_norms")
def fold_subdivmul_batch_norms(graph_def, context):
    protected = context.protected
    graph_def = replace_matching(graph_def, AFTER, _fold_after, protected=protected, transform=context.name)
    return replace_matching(graph_def, FRONT, _fold_front, protected=protected, transform=context.name)


def _affine(match, channels: int, fmt: str, rank: int, scale: np.ndarray, shift: np.ndarray):
    """Push (scale, shift) through the matched steps: y = x*scale + shift, then each Sub/RealDiv/Mul/Add by its constant."""
    i = 0
    while f"step{i}" in match.nodes:
        step = match[f"step{i}"]
        c = channel_vector(const_value(match[f"c{i}"]), channels, fmt, rank)
        if c is None or (step.op == "RealDiv" and not np.all(c)):
            return None
        if step.op == "Sub":
            shift = shift - c
        elif step.op == "RealDiv":
            scale, shift = scale / c, shift / c
        elif step.op == "Mul":
            scale, shift = scale * c, shift * c
        else:
            shift = shift + c
        i += 1
    return scale, shift


def _fold_after(match, index):
    conv = match["conv"]
    channels = output_channels(conv, const_value(match["weights"]).shape)
    rank = 2 if conv.op == "MatMul" else 4
    affine = _affine(match, channels, data_format(conv), rank, np.ones(channels), conv_bias(match, channels))
    return None if affine is None else fold_affine_into_conv(match, index, *affine)


def _fold_front(match, index):
    conv, weights = match["conv"], const_value(match["weights"]).astype(np.float64)
    if conv.op == "MatMul" and conv.attr["transpose_a"].b:
        return None
    transposed = conv.op == "MatMul" and conv.attr["transpose_b"].b
    channels = weights.shape[1] if transposed else weights.shape[0] if conv.op == "MatMul" else weights.shape[2]
    rank = 2 if conv.op == "MatMul" else 4
    affine = _affine(match, channels, data_format(conv), rank, np.ones(channels), np.zeros(channels))
    if affine is None:
        return None
    scale, shift = affine
    if np.any(shift) and not _unpadded(conv):
        return None
    new_weights_value = _scale_input_channels(conv, weights, scale, transposed)
    bias = _shift_through(conv, weights, shift, transposed)
    dtype = const_value(match["weights"]).dtype
    new_weights = const_node(index.unique_name(f"{conv.name}/folded_weights"), new_weights_value.astype(dtype))
    new_conv = node_def_pb2.NodeDef()
    new_conv.CopyFrom(conv)
    del new_conv.input[:]
    new_conv.input.extend([match.tensors["x"], new_weights.name])
    if not np.any(bias):
        return [new_weights, new_conv]
    new_conv.name = index.unique_name(f"{conv.name}/unshifted")
    bias_const = const_node(index.unique_name(f"{conv.name}/folded_bias"), bias.astype(dtype))
    bias_add = node_def_pb2.NodeDef(name=conv.name, op="BiasAdd", input=[new_conv.name, bias_const.name])
    bias_add.attr["T"].CopyFrom(conv.attr["T"])
    if conv.op != "MatMul":
        bias_add.attr["data_format"].s = data_format(conv).encode()
    return [new_weights, new_conv, bias_const, bias_add]


def _unpadded(conv) -> bool:
    padding = conv.attr["padding"].s.decode() if "padding" in conv.attr else "VALID"
    return conv.op == "MatMul" or padding == "VALID" or (padding == "EXPLICIT" and not any(conv.attr["explicit_paddings"].list.i))


def _scale_input_channels(conv, weights, scale, transposed):
    if conv.op == "MatMul":
        return weights * scale[None, :] if transposed else weights * scale[:, None]
    return weights * scale[:, None]  # HWIO and HWIM: input channels are axis 2


def _shift_through(conv, weights, shift, transposed):
    """What a constant input of ``shift`` per input channel adds to each output channel."""
    if conv.op == "MatMul":
        return weights @ shift if transposed else shift @ weights
    if conv.op == "DepthwiseConv2dNative":
        return (weights.sum(axis=(0, 1)) * shift[:, None]).reshape(-1)
    return np.einsum("hwio,i->o", weights, shift)
