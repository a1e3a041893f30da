"""The registry of int8 op quantizers: which family claims which fp32 op type.

Adding an op family is one module in this package (an ``OpQuantizer`` subclass: its pattern, the ranges it
needs, its lowerings) and one entry in ``QUANTIZERS``.
"""

from __future__ import annotations

from kquant.quantization.ops.base import OpQuantizer, PlanGraph, Unit
from kquant.quantization.ops.concat import Concat
from kquant.quantization.ops.convolution import Convolution
from kquant.quantization.ops.depthwise import DepthwiseConvolution
from kquant.quantization.ops.matmul import MatMul
from kquant.quantization.ops.pooling import AvgPool, MaxPool
from kquant.quantization.ops.reshape import Reshape
from kquant.quantization.ops.resize import ResizeBilinear

QUANTIZERS: tuple[OpQuantizer, ...] = (
    Convolution(),
    DepthwiseConvolution(),
    MatMul(),
    Concat(),
    MaxPool(),
    AvgPool(),
    Reshape(),
    ResizeBilinear(),
)
BY_OP_TYPE: dict[str, OpQuantizer] = {op: quantizer for quantizer in QUANTIZERS for op in quantizer.op_types}

__all__ = ["BY_OP_TYPE", "QUANTIZERS", "OpQuantizer", "PlanGraph", "Unit"]
