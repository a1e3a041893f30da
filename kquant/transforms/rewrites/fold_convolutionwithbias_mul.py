"""fold_convolutionwithbias_mul: conv -> BiasAdd -> Mul(constant) becomes conv(x, W*c) -> BiasAdd(b*c).

Named as Intel's transform of the same job; works for Conv2D, DepthwiseConv2dNative and MatMul, with a
scalar or per-channel constant.
"""

from __future__ import annotations

from kquant.graphdef import const_value, data_format, output_channels
from kquant.transforms.folding import BIASED_CONV, channel_vector, conv_bias, fold_affine_into_conv
from kquant.transforms.pattern import P, replace_matching
from kquant.transforms.registry import register

# conv(x, weights) -> BiasAdd(bias) -> Mul(scale)
PATTERN = P("Mul", "mul", BIASED_CONV, P("Const", "scale"), commutative=True)


@register("fold_convolutionwithbias_mul")
def fold_convolutionwithbias_mul(graph_def, context):
    return replace_matching(graph_def, [PATTERN], _fold, protected=context.protected, transform=context.name)


def _fold(match, index):
    conv = match["conv"]
    channels = output_channels(conv, const_value(match["weights"]).shape)
    scale = channel_vector(const_value(match["scale"]), channels, data_format(conv), 2 if conv.op == "MatMul" else 4)
    if scale is None:
        return None
    return fold_affine_into_conv(match, index, scale, conv_bias(match, channels) * scale)
