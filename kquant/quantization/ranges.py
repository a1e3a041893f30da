"""Range hygiene: every range kquant freezes into a graph contains 0, has a non-zero width and is finite in float32."""

from __future__ import annotations

import math

import numpy as np

from kquant.errors import CalibrationDataError

ZERO_RANGE_WIDTH = 1e-6
"""Width given to a zero-width range (an all-zero tensor): ``(0, 0)`` becomes ``(0, 1e-6)``."""
MIN_RANGE_WIDTH = 1e-30
"""Ranges narrower than this (zeros, denormals) count as zero width; 1e-30 / 255 is still a normal float32."""
FLOAT32_LIMIT = float(np.finfo(np.float32).max) / 2
"""Range ends are clipped to +-this, so that ``max - min`` stays finite in float32."""


def valid_range(low: float, high: float) -> tuple[float, float]:
    """Widen ``(low, high)`` to contain 0, give it a non-zero width and keep it finite in float32.

    ``[1, 6]`` becomes ``[0, 6]`` and ``[-8, -1]`` becomes ``[-8, 0]``. Since one end is then 0,
    the width is zero only when every value was 0 (or denormal): such a range becomes
    ``(low, low + ZERO_RANGE_WIDTH)``; 0 stays exactly representable, which is all an all-zero
    tensor needs.
    """
    if math.isnan(low) or math.isnan(high):
        raise CalibrationDataError(f"range ({low}, {high}) holds NaN; clean the calibration data")
    low = max(min(float(low), 0.0), -FLOAT32_LIMIT) + 0.0  # + 0.0 turns -0.0 into 0.0
    high = min(max(float(high), 0.0), FLOAT32_LIMIT)
    if high - low < MIN_RANGE_WIDTH:
        high = low + ZERO_RANGE_WIDTH
    return low, high
