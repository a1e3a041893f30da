"""mkl_fuse_pad_and_conv: Pad(x, constant paddings) -> Conv2D becomes one Conv2D with padding="EXPLICIT".

Keras's ZeroPadding2D before a VALID conv freezes to a Pad; the conv's explicit_paddings attribute
(one before/after pair per dimension, in data_format order) does the same in the conv kernel, which
oneDNN runs without the extra copy. Only zero padding of the spatial dimensions is folded. Named
after Intel's transform that fused Pad into the quantized conv.

A DepthwiseConv2dNative keeps its Pad: TensorFlow 2.21 aborts the process (a CHECK in
DepthwiseConv2DNativeShapeImpl, from grappler's memory optimizer) on a public depthwise conv with
padding="EXPLICIT" in a MobileNetV2 whose many tensors are fetched. The int8 rewrite folds that Pad into
the fused int8 depthwise op instead.
"""

from __future__ import annotations

import numpy as np
from tensorflow.core.framework import node_def_pb2

from kquant.graphdef import const_value, data_format
from kquant.transforms.pattern import P, replace_matching
from kquant.transforms.registry import register

# Pad(x, paddings) -> conv(·, filter)
PATTERNS = (
    P("Conv2D", "conv", P("Pad", "pad", P("*", "x"), P("Const", "paddings")), P("*", "filter")),
    P("Conv2D", "conv", P("PadV2", "pad", P("*", "x"), P("Const", "paddings"), P("Const", "value")), P("*", "filter")),
)


@register("mkl_fuse_pad_and_conv")
def mkl_fuse_pad_and_conv(graph_def, context):
    return replace_matching(graph_def, PATTERNS, _fuse, protected=context.protected, transform=context.name)


def _fuse(match, index):
    conv = match["conv"]
    paddings = const_value(match["paddings"])
    if paddings.shape != (4, 2) or np.any(paddings < 0):
        return None
    if "value" in match.nodes and np.any(const_value(match["value"])):
        return None
    channel_axis = 1 if data_format(conv) == "NCHW" else 3
    if np.any(paddings[0]) or np.any(paddings[channel_axis]):
        return None
    padding = conv.attr["padding"].s.decode()
    if padding == "VALID":
        explicit = paddings
    elif padding == "EXPLICIT":
        explicit = paddings + np.asarray(conv.attr["explicit_paddings"].list.i).reshape(4, 2)
    else:
        return None
    fused = node_def_pb2.NodeDef()
    fused.CopyFrom(conv)
    fused.input[0] = match.tensors["x"]
    fused.attr["padding"].s = b"EXPLICIT"
    fused.attr["explicit_paddings"].list.ClearField("i")
    fused.attr["explicit_paddings"].list.i.extend(int(v) for v in explicit.reshape(-1))
    return [fused]
