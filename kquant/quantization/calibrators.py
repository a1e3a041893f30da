"""Calibrators: turn the values tensors take on calibration batches into int8 ranges.

Every calibrator keeps a fixed amount of state per tensor (``statistics``: running min/max, fixed-size
histograms), so memory does not grow with the number of batches. Every range it returns passes
through ``valid_range``: it contains 0, has a non-zero width and is finite in float32.
"""

from __future__ import annotations

import inspect
import math
from typing import Mapping

import numpy as np

from kquant.errors import CalibrationDataError, ConfigurationError
from kquant.quantization.ranges import valid_range
from kquant.quantization.statistics import Extremes, MagnitudeStats, SignedStats

_CHUNK = 1 << 20  # values handled at once, bounding the temporary memory of one collect()


class Calibrator:
    """Collects the values of named tensors over calibration batches, then gives one range per tensor."""

    def __init__(self):
        self._stats: dict = {}

    def collect(self, name: str, values: np.ndarray) -> None:
        """Add one batch of ``values`` of tensor ``name``. Empty arrays are ignored; NaN/Inf raise."""
        array = np.asarray(values)
        if array.dtype.kind not in "biuf":
            raise CalibrationDataError(
                f"tensor {name!r} has dtype {array.dtype}; calibration needs real numbers")
        if array.size == 0:
            return
        flat = array.reshape(-1)
        if array.dtype.kind != "f":
            flat = flat.astype(np.float64)
        elif array.dtype.itemsize < 4:
            flat = flat.astype(np.float32)
        if not np.isfinite(flat).all():
            raise CalibrationDataError(
                f"tensor {name!r} holds {int(np.isnan(flat).sum())} NaN and {int(np.isinf(flat).sum())} "
                "Inf values in a calibration batch; clean the calibration data (drop or fix those "
                "samples) or fix the model producing them")
        stats = self._stats.get(name)
        if stats is None:
            stats = self._stats[name] = self._new_stats()
        for start in range(0, flat.size, _CHUNK):
            stats.add(flat[start : start + _CHUNK])

    def collect_batch(self, tensors: Mapping[str, np.ndarray]) -> None:
        """``collect`` every ``name -> values`` item of one batch."""
        for name, values in tensors.items():
            self.collect(name, values)

    def compute_ranges(self) -> dict[str, tuple[float, float]]:
        """``{tensor name: (min, max)}``, each range passed through ``valid_range``."""
        if not self._stats:
            raise CalibrationDataError(
                "no calibration values were collected; give at least one non-empty batch")
        return {name: valid_range(*self._range(stats)) for name, stats in self._stats.items()}

    @property
    def nbytes(self) -> int:
        """Bytes of statistics held: a fixed amount per tensor, whatever the number of batches."""
        return sum(stats.nbytes for stats in self._stats.values())

    def _new_stats(self):
        raise NotImplementedError

    def _range(self, stats) -> tuple[float, float]:
        raise NotImplementedError


class MinMaxCalibrator(Calibrator):
    """The smallest and largest value seen."""

    def _new_stats(self):
        return Extremes()

    def _range(self, stats):
        return stats.low, stats.high


class PercentileCalibrator(Calibrator):
    """Clips the ``100 - percentile`` % most extreme values off each end of the distribution.

    Values are counted in log-linear histograms (``2**per_octave_bits`` bins per power of two,
    ``octaves`` powers of two below the largest magnitude, one histogram per sign), so the
    result is accurate to about ``2**-per_octave_bits`` relative, even next to huge outliers.
    With ``symmetric=True`` the percentile is taken of ``|x|`` and the range is ``(-t, t)``, or
    ``(0, t)`` for a tensor with no negative value.
    """

    def __init__(self, percentile: float = 99.99, *, symmetric: bool = False,
                 octaves: int = 32, per_octave_bits: int = 6):
        super().__init__()
        if not 50 < percentile <= 100:
            raise ConfigurationError(
                f"percentile must be in (50, 100], got {percentile}; e.g. percentile=99.99")
        if not (1 <= octaves <= 128 and 0 <= per_octave_bits <= 12):
            raise ConfigurationError(
                f"octaves must be in [1, 128] and per_octave_bits in [0, 12], got {octaves} and "
                f"{per_octave_bits}; e.g. octaves=32, per_octave_bits=6")
        self.percentile = float(percentile)
        self.symmetric = symmetric
        self.octaves = octaves
        self.per_octave_bits = per_octave_bits

    def _new_stats(self):
        return SignedStats(self.octaves, self.per_octave_bits)

    def _range(self, stats):
        low, high = stats.extremes.low, stats.extremes.high
        negatives = stats.negative.total
        count = negatives + stats.positive.total
        clipped = count * (100.0 - self.percentile) / 100.0
        if self.symmetric:
            magnitudes = stats.negative.combined(stats.positive)
            threshold = min(magnitudes.quantile(count - clipped), max(-low, high))
            return (0.0, threshold) if low >= 0 else (-threshold, threshold)

        def at_rank(rank):
            if rank < negatives:
                return -stats.negative.quantile(negatives - rank)
            return stats.positive.quantile(rank - negatives)

        return max(at_rank(clipped), low), min(at_rank(count - clipped), high)


class EntropyCalibrator(Calibrator):
    """TensorRT-style entropy calibration: the ``|x|`` threshold whose clipped, quantized
    distribution is closest (KL divergence) to the observed one.

    ``|x|`` is counted in ``2**bits`` linear bins over ``[0, 2**k)`` (the power of two above the
    largest magnitude). Each candidate threshold ``i`` bins (``levels <= i <= 2**bits``) gives a
    reference P (bins below ``i``, the clipped mass added to the last one) and Q (the bins below
    ``i`` merged into ``levels`` groups, each group's count spread evenly over its non-empty
    bins); the threshold with the smallest KL(P || Q) wins (see ``kl_threshold_bins``).
    Exact zeros are left out: every candidate range represents them exactly, and left in bin 0
    (ReLU outputs are half zeros) they would decide the result by whether bin 0 shares a group.
    ``levels`` defaults to 128 (int8), or 256 (uint8) for a tensor with no negative value, which
    gets ``(0, t)``; others get ``(-t, t)``.
    """

    def __init__(self, *, bits: int = 11, levels: int | None = None):
        super().__init__()
        if not 8 <= bits <= 13:
            raise ConfigurationError(f"bits must be in [8, 13], got {bits}; e.g. bits=11 (2048 bins)")
        if levels is not None and not 2 <= levels <= (1 << bits) // 2:
            raise ConfigurationError(
                f"levels must be in [2, {(1 << bits) // 2}] for bits={bits}, got {levels}; "
                "e.g. levels=128, or leave it unset")
        self.bits = bits
        self.levels = levels

    def _new_stats(self):
        return MagnitudeStats(self.bits)

    def _range(self, stats):
        low, high = stats.extremes.low, stats.extremes.high
        levels = self.levels or (256 if low >= 0 else 128)
        histogram = stats.magnitudes
        if histogram.top is None:
            return 0.0, 0.0
        counts = histogram.counts.copy()
        counts[0] -= stats.zeros
        bins = kl_threshold_bins(counts, levels)
        threshold = min(histogram.value_at(bins, 0.0), max(-low, high))
        return (0.0, threshold) if low >= 0 else (-threshold, threshold)


def kl_threshold_bins(counts: np.ndarray, levels: int) -> int:
    """The number of leading bins of histogram ``counts`` to keep that minimizes KL(P || Q).

    Q is not renormalized after clipping: it holds only the unclipped mass, which adds
    ``-log(1 - clipped fraction)`` to TensorRT's score. Without it, a tensor with no values near
    0 scores 0 when everything is clipped into one bin (P and Q both one spike). All candidates
    ``levels..len(counts)`` are scored at once from cumulative sums, so a 2048-bin histogram
    costs a few milliseconds instead of a Python loop over 1900 candidates.
    """
    hist = counts.astype(np.float64)
    total = hist.sum()
    cum = np.concatenate(([0.0], np.cumsum(hist)))
    cum_nonzero = np.concatenate(([0], np.cumsum(hist > 0)))
    cum_hlogh = np.concatenate(([0.0], np.cumsum(_xlogx(hist))))
    keep = np.arange(levels, hist.size + 1)
    clipped = total - cum[keep]
    last = hist[keep - 1] + clipped  # the last kept bin of P also holds the clipped mass
    p_log_p = (cum_hlogh[keep - 1] + _xlogx(last)) / total - math.log(total)

    bounds = (np.arange(levels + 1) * keep[:, None]) // levels  # group g = bins [bounds[g], bounds[g+1])
    group_sum = np.diff(cum[bounds], axis=1)
    group_nonzero = np.diff(cum_nonzero[bounds], axis=1)
    p_mass = group_sum.copy()
    p_mass[:, -1] += clipped
    with np.errstate(divide="ignore", invalid="ignore"):
        log_q = np.log(group_sum / (group_nonzero * total))  # Q sums to the unclipped fraction, not 1
    p_log_q = np.where(group_sum > 0, p_mass * log_q, 0.0).sum(axis=1) / total

    kl = p_log_p - p_log_q
    kl[(hist[keep - 1] == 0) & (clipped > 0)] = np.inf  # P has mass where Q has none
    return int(keep[np.argmin(kl)])


def _xlogx(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x * np.log(np.where(x > 0, x, 1.0))


CALIBRATORS: dict[str, type[Calibrator]] = {
    "minmax": MinMaxCalibrator,
    "percentile": PercentileCalibrator,
    "kl": EntropyCalibrator,
    "entropy": EntropyCalibrator,
}


def make_calibrator(method: str, **options) -> Calibrator:
    """A new calibrator for ``method`` (a key of ``CALIBRATORS``) built with ``options``."""
    cls = CALIBRATORS.get(str(method).strip().lower())
    if cls is None:
        raise ConfigurationError(
            f"unknown calibration method {method!r}; use one of: {', '.join(CALIBRATORS)}")
    accepted = list(inspect.signature(cls).parameters)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigurationError(
            f"calibration method {method!r} takes no option {', '.join(unknown)}; "
            f"its options: {', '.join(accepted) or 'none'}")
    return cls(**options)
