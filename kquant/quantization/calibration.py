"""Calibrators: turn the values tensors take on calibration batches into int8 ranges.

Every calibrator keeps a fixed amount of state per tensor (running min/max, fixed-size
histograms), so memory does not grow with the number of batches. Every range it returns passes
through ``valid_range``: it contains 0, has a non-zero width and is finite in float32.

Also reads the min/max logs of TF's ``insert_logging`` workflow (``read_min_max_log``,
``read_min_log``, ``read_max_log``) and combines repeated entries like TF's
``freeze_requantization_ranges`` does.
"""

from __future__ import annotations

import copy
import inspect
import math
import os
import re
from pathlib import Path
from typing import Mapping

import numpy as np

from kquant.errors import CalibrationDataError, ConfigurationError

ZERO_RANGE_WIDTH = 1e-6
"""Width given to a zero-width range (an all-zero tensor): ``(0, 0)`` becomes ``(0, 1e-6)``."""
MIN_RANGE_WIDTH = 1e-30
"""Ranges narrower than this (zeros, denormals) count as zero width; 1e-30 / 255 is still a normal float32."""
FLOAT32_LIMIT = float(np.finfo(np.float32).max) / 2
"""Range ends are clipped to +-this, so that ``max - min`` stays finite in float32."""

_CHUNK = 1 << 20  # values handled at once, bounding the temporary memory of one collect()


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


# ---------------------------------------------------------------------------------------------
# Per-tensor state


class _Extremes:
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


class _Histogram:
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

    def combined(self, other: _Histogram) -> _Histogram:
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


class _LinearHistogram(_Histogram):
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


class _OctaveHistogram(_Histogram):
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


class _SignedStats:
    """Min/max plus octave histograms of the negative values' magnitudes and of the others."""

    def __init__(self, octaves: int, per_octave_bits: int):
        self.extremes = _Extremes()
        self.negative = _OctaveHistogram(octaves, per_octave_bits)
        self.positive = _OctaveHistogram(octaves, per_octave_bits)

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


class _MagnitudeStats:
    """Min/max, a linear histogram of ``|x|`` and the number of exact zeros (in its bin 0)."""

    def __init__(self, bits: int):
        self.extremes = _Extremes()
        self.magnitudes = _LinearHistogram(bits)
        self.zeros = 0

    def add(self, values):
        self.extremes.add(values)
        self.magnitudes.add(np.abs(values))
        self.zeros += values.size - int(np.count_nonzero(values))

    @property
    def nbytes(self):
        return self.extremes.nbytes + self.magnitudes.nbytes + 8


# ---------------------------------------------------------------------------------------------
# Calibrators


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
        return _Extremes()

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
        return _SignedStats(self.octaves, self.per_octave_bits)

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
        return _MagnitudeStats(self.bits)

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


# ---------------------------------------------------------------------------------------------
# Min/max logs of TF's insert_logging workflow

_LOG_ENTRY = re.compile(
    r"(?:^|[;\s])(?P<name>[^\s;:\[\]]+?)(?:__print__;)?"
    r"(?P<tag>__requant_min_max|__requant_min|__requant_max|__min|__max):"
    r"\[(?P<first>[^\[\]]*)\](?:\[(?P<second>[^\[\]]*)\])?")


def read_min_max_log(source: str | os.PathLike, *, min_percentile: float = 5.0,
                     max_percentile: float = 5.0) -> dict[str, tuple[float, float]]:
    """``{name: (min, max)}`` from the ``;name__print__;__requant_min_max:[min][max]`` lines of a log.

    ``source`` is a path, or the log text itself (a string holding a newline or ``;``). Other
    lines are skipped; separate ``__requant_min:`` / ``__requant_max:`` entries of one name are
    paired too. A name logged once per batch is combined as TF's freeze_requantization_ranges
    does: sort the mins and the maxes, take the min at index ``round(n * min_percentile / 100)``
    and the max at ``round(n * (1 - max_percentile / 100))``, clamped to the list. Pass 0 and 0
    for the min of the mins and the max of the maxes. Ranges go through ``valid_range``.
    """
    entries = _log_entries(source)
    mins, maxes = entries["__requant_min"], entries["__requant_max"]
    for name, values in entries["__requant_min_max"].items():
        for low, high in values:
            mins.setdefault(name, []).append(low)
            maxes.setdefault(name, []).append(high)
    ranges = {
        name: valid_range(_pick(mins[name], _fraction(min_percentile)),
                          _pick(maxes[name], 1 - _fraction(max_percentile)))
        for name in mins.keys() & maxes.keys()}
    if not ranges:
        raise CalibrationDataError(
            f"{_describe(source)} holds no '__requant_min_max:[min][max]' lines; give the log of a "
            "run of the graph transformed with insert_logging(op=RequantizationRange, show_name=true, "
            "message=\"__requant_min_max:\")")
    return dict(sorted(ranges.items()))


def read_min_log(source: str | os.PathLike, *, percentile: float = 5.0) -> dict[str, float]:
    """``{name: min}`` from ``;name__print__;__min:[v]`` lines; repeats give the low TF pick
    (sorted index ``round(n * percentile / 100)``; 0 gives the min of the mins). Values are raw."""
    return _read_single(source, "__min", _fraction(percentile))


def read_max_log(source: str | os.PathLike, *, percentile: float = 5.0) -> dict[str, float]:
    """``{name: max}`` from ``;name__print__;__max:[v]`` lines; repeats give the high TF pick
    (sorted index ``round(n * (1 - percentile / 100))``; 0 gives the max of the maxes). Values are raw."""
    return _read_single(source, "__max", 1 - _fraction(percentile))


def _read_single(source, tag: str, fraction: np.float32) -> dict[str, float]:
    values = _log_entries(source)[tag]
    if not values:
        raise CalibrationDataError(
            f"{_describe(source)} holds no '{tag}:[value]' lines; give the log of a run of the graph "
            f"with insert_logging(op={tag[2:].capitalize()}, message=\"{tag}:\", show_name=true)")
    return {name: _pick(found, fraction) for name, found in sorted(values.items())}


def _log_entries(source) -> dict[str, dict[str, list]]:
    """``{tag: {name: [value or (min, max), ...]}}`` from every well-formed entry of a log."""
    entries: dict[str, dict[str, list]] = {
        tag: {} for tag in ("__requant_min_max", "__requant_min", "__requant_max", "__min", "__max")}
    for line in _log_text(source).splitlines():
        for match in _LOG_ENTRY.finditer(line):
            name, tag, first, second = match.group("name", "tag", "first", "second")
            if (second is not None) != (tag == "__requant_min_max"):
                continue
            try:
                numbers = [float(text) for text in (first, second) if text is not None]
            except ValueError:
                continue
            if not all(math.isfinite(number) for number in numbers):
                raise CalibrationDataError(
                    f"the log entry of {name!r} holds NaN or Inf ({match.group(0).strip()}); clean the "
                    "calibration data, or fix the model producing them, and log again")
            entries[tag].setdefault(name, []).append(numbers[0] if len(numbers) == 1 else tuple(numbers))
    return entries


def _is_text(source) -> bool:
    return isinstance(source, str) and ("\n" in source or ";" in source)


def _log_text(source) -> str:
    if _is_text(source):
        return source
    from kquant.files import read_bytes

    return read_bytes(Path(source), role="min/max log", error=CalibrationDataError,
                      missing=CalibrationDataError).decode(errors="replace")


def _describe(source) -> str:
    return "the log text" if _is_text(source) else f"log {source}"


def _fraction(percentile: float) -> np.float32:
    if not 0 <= percentile <= 100:
        raise ConfigurationError(f"a log percentile must be in [0, 100], got {percentile}; e.g. 5.0")
    return np.float32(percentile) / np.float32(100)


def _pick(values: list[float], fraction: np.float32) -> float:
    """TF's pick: sorted ``values`` at index ``round(n * fraction)`` (float32, half away from 0), clamped."""
    index = math.floor(float(np.float32(len(values)) * fraction) + 0.5)
    return sorted(values)[min(max(index, 0), len(values) - 1)]
