"""fold_keras_batch_norms: fold the batch norms Keras 3 and tf_keras emit after a conv, depthwise conv or MatMul.

Keras 3 freezes BatchNormalization to x*mul + (beta - mean*mul); after fold_constants that is a Mul and
an Add by constants. tf_keras emits FusedBatchNormV3. Either, after Conv2D, DepthwiseConv2dNative or
MatMul (with or without its BiasAdd), becomes conv(x, W') -> BiasAdd. A lone constant Add after a conv
(the stock fold_batch_norms leaves one when it folds the Mul) becomes its BiasAdd, and a lone constant Mul
its weights. The constants may have any shape that broadcasts along the channels only: Keras 3's
BatchNormalization(axis=3) gives [1, 1, 1, C], which the stock fold_batch_norms rejects, so kquant's
list runs this transform before it. Prerequisites:
fold_constants, and the weights as plain Const nodes (remove_freeze_leftovers or remove_nodes(op=Identity)).
"""

from __future__ import annotations

import numpy as np

from kquant.graphdef import const_value, data_format, output_channels
from kquant.transforms.folding import BIASED_CONV, CONV, channel_vector, conv_bias, fold_affine_into_conv
from kquant.transforms.pattern import P, replace_matching
from kquant.transforms.registry import register

FUSED_BATCH_NORMS = "FusedBatchNorm|FusedBatchNormV2|FusedBatchNormV3"


def _patterns():
    for base in (BIASED_CONV, CONV):
        # conv [-> BiasAdd(bias)] -> Mul(scale) -> Add(shift): a Keras 3 batch norm after fold_constants
        yield P("Add|AddV2", "add", P("Mul", "mul", base, P("Const", "scale"), commutative=True), P("Const", "shift"), commutative=True)
        # conv [-> BiasAdd(bias)] -> FusedBatchNorm(gamma, beta, mean, variance): tf_keras
        yield P(FUSED_BATCH_NORMS, "norm", base, P("Const", "gamma"), P("Const", "beta"), P("Const", "mean"), P("Const", "variance"))
        # conv [-> BiasAdd(bias)] -> Add(shift): what the stock fold_batch_norms leaves
        yield P("Add|AddV2", "add", base, P("Const", "shift"), commutative=True)
        # conv [-> BiasAdd(bias)] -> Mul(scale)
        yield P("Mul", "mul", base, P("Const", "scale"), commutative=True)
    # conv -> BiasAdd(bias) -> BiasAdd(shift)
    yield P("BiasAdd", "add", BIASED_CONV, P("Const", "shift"))


PATTERNS = tuple(_patterns())


@register("fold_keras_batch_norms")
def fold_keras_batch_norms(graph_def, context):
    return replace_matching(graph_def, PATTERNS, _fold, protected=context.protected, transform=context.name)


def _fold(match, index):
    conv = match["conv"]
    channels = output_channels(conv, const_value(match["weights"]).shape)
    fmt, rank = data_format(conv), 2 if conv.op == "MatMul" else 4
    if "norm" in match.nodes:
        affine = _batch_norm_affine(match, channels, fmt)
    else:
        scale = channel_vector(const_value(match["scale"]), channels, fmt, rank) if "scale" in match.nodes else np.ones(channels)
        shift = (channel_vector(const_value(match["shift"]), channels, fmt, rank) if "shift" in match.nodes
                 else np.zeros(channels))
        affine = None if scale is None or shift is None else (scale, shift)
    if affine is None:
        return None
    scale, shift = affine
    return fold_affine_into_conv(match, index, scale, conv_bias(match, channels) * scale + shift)


def _batch_norm_affine(match, channels, fmt):
    norm = match["norm"]
    if norm.attr["is_training"].b or data_format(norm) != fmt:
        return None
    gamma, beta, mean, variance = (const_value(match[k]).astype(np.float64) for k in ("gamma", "beta", "mean", "variance"))
    if not all(v.shape == (channels,) for v in (gamma, beta, mean, variance)):
        return None
    scale = gamma / np.sqrt(variance + norm.attr["epsilon"].f)
    return scale, beta - mean * scale
