"""Weight arithmetic: symmetric int8 weights per output channel or per tensor, and the values they stand for."""

from __future__ import annotations

import numpy as np


def quantize_weights(weights: np.ndarray, channels: int, per_channel: bool, pair_safe: bool = False):
    """Symmetric int8 weights (per output channel, the ``channels`` of its last axes, or per tensor); returns
    (q, max) with q * max / 127 ~ weights.

    ``pair_safe`` scales by the largest same-sign sum of an input-channel pair (2k, 2k+1) instead of the
    largest magnitude, so |q_2k + q_2k+1| <= 128 and 255 * 128 fits the int16 sum oneDNN forms without VNNI.
    """
    magnitude = _pair_sums(weights) if pair_safe else np.abs(weights)
    w_max = magnitude.reshape(-1, channels).max(axis=0) if per_channel else np.asarray(magnitude.max())
    # A dead channel (weights ~1e-33 after batch-norm folding) would get a scale so large that the kernel's
    # int32 bias overflows; a floor relative to the largest channel keeps every scale sane.
    w_max = np.maximum(w_max, max(float(np.max(w_max)) * 1e-3, 1e-8)).astype(np.float32)
    flat = weights.reshape(-1, channels) if per_channel else weights.reshape(-1, 1)
    q = np.clip(np.round(flat / w_max * 127), -127, 127).astype(np.int8).reshape(weights.shape)
    return q, w_max


def dequantized_weights(q: np.ndarray, w_max, channels: int) -> np.ndarray:
    """The float values int8 weights stand for, as [taps * inputs, channels] (``w_max`` per channel or one)."""
    return q.astype(np.float64).reshape(-1, channels) * (w_max / 127.0)


def _pair_sums(weights: np.ndarray) -> np.ndarray:
    """For weights [..., in, out]: per pair of input channels (2k, 2k+1), the larger of its positive and negative sums.

    Rounding adds at most 1 to a pair scaled to 127, so the quantized pair stays within 128.
    """
    if weights.shape[-2] % 2:
        weights = np.concatenate([weights, np.zeros_like(weights[..., :1, :])], axis=-2)
    pairs = weights.reshape(*weights.shape[:-2], weights.shape[-2] // 2, 2, weights.shape[-1])
    return np.maximum(np.maximum(pairs, 0).sum(axis=-2), np.maximum(-pairs, 0).sum(axis=-2))
