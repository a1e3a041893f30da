"""Shared by the folding transforms: conv patterns, per-channel vectors, and folding y = conv(x, W)*scale + shift into W and a bias."""

from __future__ import annotations

import numpy as np
from tensorflow.core.framework import node_def_pb2

from kquant.graphdef import const_node, const_value, data_format, is_control_input, node_name
from kquant.transforms.pattern import P

CONV_OPS = "Conv2D|DepthwiseConv2dNative|MatMul"
# ops that compute the same on a tensor whatever its leading axes, as long as its channels stay last
ELEMENTWISE_OPS = frozenset({"Relu", "Relu6", "Elu", "Selu", "LeakyRelu", "Tanh", "Sigmoid"})
BINARY_OPS = frozenset({"Add", "AddV2", "Mul", "Maximum", "Minimum", "Sub", "RealDiv"})  # with a constant
PER_CHANNEL_OPS = ELEMENTWISE_OPS | BINARY_OPS | {"BiasAdd"}

CONV = P(CONV_OPS, "conv", P("*", "x"), P("Const", "weights"))
BIASED_CONV = P("BiasAdd", "bias_add", CONV, P("Const", "bias"))


def channel_vector(value: np.ndarray, channels: int, fmt: str = "NHWC", rank: int = 4) -> np.ndarray | None:
    """``value`` as one number per channel, if broadcasting it against a rank-``rank`` tensor varies only along channels."""
    value = np.asarray(value, np.float64)
    if value.size == 1 and value.ndim <= rank:
        return np.full(channels, value.item())
    if value.ndim > rank or value.size != channels:
        return None
    axis = -3 if fmt == "NCHW" and rank == 4 else -1
    if value.ndim < -axis or value.shape[axis] != channels:
        return None
    return value.reshape(-1)


def scale_output_channels(conv, weights: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The weights of ``conv`` with each output channel multiplied by ``scale``."""
    if conv.op == "MatMul" and conv.attr["transpose_b"].b:
        return weights * scale[:, None]
    if conv.op == "DepthwiseConv2dNative":
        return weights * scale.reshape(weights.shape[2], weights.shape[3])
    return weights * scale


def fold_affine_into_conv(match, index, scale: np.ndarray, shift: np.ndarray) -> list[node_def_pb2.NodeDef]:
    """Replace the match (root included) by conv(x, W*scale) -> BiasAdd(shift), the BiasAdd named as the root.

    ``match`` labels the conv "conv" and its weights "weights"; ``scale`` and ``shift`` hold one value per output channel.
    """
    conv, weights_node = match["conv"], match["weights"]
    weights = const_value(weights_node)
    new_weights = const_node(index.unique_name(f"{conv.name}/folded_weights"),
                             scale_output_channels(conv, weights.astype(np.float64), scale).astype(weights.dtype))
    new_conv = node_def_pb2.NodeDef()
    new_conv.CopyFrom(conv)
    new_conv.input[1] = new_weights.name
    bias = const_node(index.unique_name(f"{match.root.name}/folded_bias"), shift.astype(weights.dtype))
    bias_add = node_def_pb2.NodeDef(name=match.root.name, op="BiasAdd", input=[conv.name, bias.name])
    bias_add.attr["T"].CopyFrom(conv.attr["T"])
    if conv.op != "MatMul":
        bias_add.attr["data_format"].s = data_format(conv).encode()
    return [new_weights, new_conv, bias, bias_add]


def conv_bias(match, channels: int) -> np.ndarray:
    """The match's bias (label "bias") per output channel, zeros when it has none."""
    if "bias" not in match.nodes:
        return np.zeros(channels)
    return const_value(match["bias"]).astype(np.float64).reshape(-1)


def varies_only_along_channels(op, name: str, index) -> bool:
    """Whether ``op`` reads node ``name`` once and computes the same whatever the leading axes of that tensor:
    an elementwise activation, an NHWC BiasAdd of it, or a binary op with a scalar or per-channel constant
    (Sub and RealDiv with it first). Reshapes that keep the channels last can move across such an op."""
    data = [node_name(i) for i in op.input if not is_control_input(i)]
    if data.count(name) != 1:
        return False
    if op.op in ELEMENTWISE_OPS:
        return True
    if op.op == "BiasAdd":
        return data[0] == name and data_format(op) == "NHWC"
    constant = index.by_name.get(data[1 - data.index(name)]) if len(data) == 2 else None
    return (op.op in BINARY_OPS and constant is not None and constant.op == "Const" and const_value(constant).ndim <= 1
            and (op.op not in ("Sub", "RealDiv") or data[0] == name))
