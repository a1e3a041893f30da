"""How a tensor is held in 8 bits: its dtype, mode and range, and the two range rules every lowering shares."""

from __future__ import annotations

import dataclasses
from typing import Literal

import tensorflow as tf

from kquant.quantization.ranges import MIN_RANGE_WIDTH

Kernels = Literal["onednn", "public"]
KERNELS = ("onednn", "public")


@dataclasses.dataclass(frozen=True)
class QTensor:
    """An int8 tensor, the tensors holding its float range, its dtype and encoding mode."""

    tensor: str
    min: str
    max: str
    dtype: tf.DType
    mode: str = "SCALED"
    # A signed tensor kept as quint8 codes q for x = low + q * (high - low) / 255 (MIN_FIRST), so convolutions
    # read it unsigned; they declare the range [0, high - low] and add low * sum(weights) to their bias.
    shift: tuple[float, float] | None = None


@dataclasses.dataclass(frozen=True)
class RewriteOptions:
    per_channel: bool = True
    # Without VNNI, oneDNN adds the u8*s8 products of input channels 2k and 2k+1 in int16, which
    # saturates for 8-bit activations and weights; pair_safe_weights scales weights that meet
    # unsigned inputs so that no such pair can exceed it (see weights.quantize_weights).
    pair_safe_weights: bool = False
    # "onednn": the internal _FusedQuantized*/_QuantizedMatMul ops (fastest); "public": the
    # Quantized*WithBias*AndRequantize ops, which take only unsigned conv inputs and fuse less.
    kernels: Kernels = "onednn"


def zero_exact(low: float, high: float) -> tuple[float, float]:
    """[low, high] moved by under half a step so that 0.0 is one of its 256 codes (zero padding stays exact)."""
    step = max(high - low, MIN_RANGE_WIDTH) / 255.0
    zero_code = min(max(round(-low / step), 0), 255)
    return -zero_code * step, (255 - zero_code) * step


def qint8_bound(low: float, high: float) -> float:
    """The symmetric qint8 range [-bound, bound] of [low, high] (no larger floor: a range of 1e-8 keeps its 8 bits)."""
    return max(-low, high, MIN_RANGE_WIDTH)
