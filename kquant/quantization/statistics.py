"""Per-tensor calibration statistics of a fixed size: running extremes and histograms (linear, or by octaves for
values spanning many orders of magnitude), so memory does not grow with the number of batches."""

from __future__ import annotations

import copy
import math

import numpy as np


class Extremes:
    """Running min and max."""

    def __init__(self):
        self.low = math.inf
        self.high = -math.inf

    def add(self, values: np.ndarray) -> None:
        self.low = min(self.low, float(values.min()))
        self.high = max(self.high, float(values.max()))

    @property
    def nbytes(self) -> int:
        return 16


class Histogram:
    """A fixed-size histogram of magnitudes (values >= 0) whose range grows by powers of two.

    ``top`` is the exponent with every value seen ``< 2**top`` (None while only zeros were seen).
    Growing the range merges bins exactly, so streaming many batches gives the same counts as
    one batch holding them all.
    """

    def __init__(self, size: int):
        self.counts = np.zeros(size, dtype=np.int64)
        self.top: int | None = None

    def add(self, magnitudes: np.ndarray) -> None:
        peak = float(magnitudes.max())
        if peak > 0:
            top = int(np.frexp(peak)[1])
            if self.top is None:
                self.top = top
            elif top > self.top:
                self.counts = self._rebinned(top)
                self.top = top
        if self.top is None:
            self.counts[0] += magnitudes.size
        else:
            self.counts += np.bincount(self._bins(magnitudes), minlength=self.counts.size)

    def combined(self, other: Histogram) -> Histogram:
        """A histogram of the values of both, on the wider of their two ranges."""
        if other.top is not None and (self.top is None or other.top > self.top):
            return other.combined(self)
        result = copy.copy(self)
        result.counts = self.counts + (other.counts if other.top is None else other._rebinned(self.top))
        return result

    def quantile(self, rank: float) -> float:
        """The magnitude with about ``rank`` of the counted values at or below it (linear within a bin)."""
        if self.top is None:
            return 0.0
        cumulative = np.cumsum(self.counts)
        index = min(int(np.searchsorted(cumulative, rank)), self.counts.size - 1)
        count = self.counts[index]
        before = cumulative[index] - count
        fraction = min(max(float(rank - before) / float(count), 0.0), 1.0) if count else 0.0
        return self.value_at(index, fraction)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    @property
    def nbytes(self) -> int:
        return self.counts.nbytes + 8

    def _bins(self, magnitudes: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _rebinned(self, top: int) -> np.ndarray:
        raise NotImplementedError

    def value_at(self, index: int, fraction: float) -> float:
        raise NotImplementedError


class LinearHistogram(Histogram):
    """``2**bits`` equal bins over ``[0, 2**top)``; growing by ``2**k`` sums runs of ``2**k`` bins."""

    def __init__(self, bits: int):
        super().__init__(1 << bits)
        self.bits = bits

    def _bins(self, magnitudes):
        return np.ldexp(magnitudes, self.bits - self.top).astype(np.intp)

    def _rebinned(self, top):
        shift = top - self.top
        counts = np.zeros_like(self.counts)
        if shift >= self.bits:
            counts[0] = self.counts.sum()
        else:
            merged = self.counts.reshape(-1, 1 << shift).sum(axis=1)
            counts[: merged.size] = merged
        return counts

    def value_at(self, index, fraction):
        return math.ldexp(1.0, self.top - self.bits) * (index + fraction)  # inf, not OverflowError, past 2**1024


class OctaveHistogram(Histogram):
    """Log-linear bins: ``octaves`` powers of two below ``2**top``, each cut into ``per_octave``
    equal bins, plus bin 0 for everything smaller (zeros included).

    Relative resolution is ``1 / per_octave`` over a dynamic range of ``2**octaves``, so one
    outlier at 1e4 does not blur the bulk at 1. Growing the range shifts whole octaves down and
    folds the lowest ones into bin 0.
    """

    def __init__(self, octaves: int, per_octave_bits: int):
        super().__init__(1 + (octaves << per_octave_bits))
        self.octaves = octaves
        self.per_octave_bits = per_octave_bits

    def _bins(self, magnitudes):
        mantissa, exponent = np.frexp(magnitudes)  # value = mantissa * 2**exponent, mantissa in [0.5, 1)
        octave = exponent.astype(np.intp) - (self.top - self.octaves + 1)
        within = np.ldexp(mantissa * 2 - 1, self.per_octave_bits).astype(np.intp)
        inside = (octave >= 0) & (magnitudes > 0)
        return np.where(inside, 1 + (octave << self.per_octave_bits) + within, 0)

    def _rebinned(self, top):
        dropped = min(top - self.top, self.octaves) << self.per_octave_bits
        counts = np.zeros_like(self.counts)
        counts[0] = self.counts[: 1 + dropped].sum()
        kept = self.counts[1 + dropped :]
        counts[1 : 1 + kept.size] = kept
        return counts

    def value_at(self, index, fraction):
        if index == 0:
            return math.ldexp(fraction, self.top - self.octaves)
        octave, within = divmod(index - 1, 1 << self.per_octave_bits)
        base = math.ldexp(1.0, self.top - self.octaves + octave)
        return base * (1 + math.ldexp(within + fraction, -self.per_octave_bits))


class SignedStats:
    """Min/max plus octave histograms of the negative values' magnitudes and of the others."""

    def __init__(self, octaves: int, per_octave_bits: int):
        self.extremes = Extremes()
        self.negative = OctaveHistogram(octaves, per_octave_bits)
        self.positive = OctaveHistogram(octaves, per_octave_bits)

    def add(self, values):
        self.extremes.add(values)
        below = values < 0
        if below.any():
            self.negative.add(-values[below])
            values = values[~below]
        if values.size:
            self.positive.add(values)

    @property
    def nbytes(self):
        return self.extremes.nbytes + self.negative.nbytes + self.positive.nbytes


class MagnitudeStats:
    """Min/max, a linear histogram of ``|x|`` and the number of exact zeros (in its bin 0)."""

    def __init__(self, bits: int):
        self.extremes = Extremes()
        self.magnitudes = LinearHistogram(bits)
        self.zeros = 0

    def add(self, values):
        self.extremes.add(values)
        self.magnitudes.add(np.abs(values))
        self.zeros += values.size - int(np.count_nonzero(values))

    @property
    def nbytes(self):
        return self.extremes.nbytes + self.magnitudes.nbytes + 8
