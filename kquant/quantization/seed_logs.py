"""The min/max logs of TF's insert_logging workflow: read them (combining repeated entries like TF's
``freeze_requantization_ranges``), map their entries to a plan's tensors, and write them back."""

from __future__ import annotations

import math
import os
import re
import warnings
from pathlib import Path

import numpy as np

from kquant.errors import CalibrationDataError, ConfigurationError
from kquant.graph import atomic_write
from kquant.graphdef import node_name
from kquant.quantization.plan import tensors_to_calibrate
from kquant.quantization.ranges import valid_range

# the requantize range of a conv/matmul: Intel's quantize_graph (X_eightbit_requant_range) and the stock
# quantize_nodes (X_eightbit/requant_range), as insert_logging(show_name=true) names them
REQUANT_SUFFIXES = ("_eightbit_requant_range", "_eightbit/requant_range", "/eightbit/requant_range", "/requant_range",
                    "_requant_range", "__print__")
# the range of a tensor quantized on entry: Intel's CONSUMER_eightbit_min_TENSOR, stock CONSUMER_eightbit/TENSOR/min
_INPUT_RANGE = (re.compile(r".+?_eightbit_(?P<bound>min|max)_(?P<tensor>.+)"),
                re.compile(r".+?[_/]eightbit/(?P<tensor>.+)/(?P<bound>min|max)"))
_PORT = "__port__"

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


def ranges_from_log(log, units) -> dict:
    """Tensor -> (min, max) from a seed min/max log (a path, the log text, or an already read ``{name: (min, max)}``).

    Requantize ranges (``X_eightbit_requant_range``, ``X/eightbit/requant_range``) go to the output of the unit that
    holds node X; ``__min:``/``__max:`` entries (``C_eightbit_min_T``, ``C_eightbit/T/min``) to tensor T. A log
    whose entries match nothing raises CalibrationDataError; unmatched entries are named in one warning.
    """
    requant, bounds = _log_ranges(log)
    by_node = {name: unit.output_tensor for unit in units for name in unit.nodes}
    wanted = set(tensors_to_calibrate(units))
    ranges, unmatched = {}, []
    for key, value in requant.items():
        name = node_name(key)
        for suffix in REQUANT_SUFFIXES:
            name = name.removesuffix(suffix)
        if name in by_node:
            ranges[by_node[name]] = value
        else:
            unmatched.append(key)
    for tensor, (low, high) in bounds.items():
        if tensor in wanted and low is not None and high is not None:
            ranges.setdefault(tensor, (low, high))
        else:
            unmatched.append(tensor)
    if not ranges:
        raise CalibrationDataError(
            f"none of the {len(requant) + len(bounds)} min/max log entries names an int8 unit of this graph (first: "
            f"{', '.join(sorted(unmatched)[:3])}); log the graph you quantize, e.g. kquant quantize --save-stages DIR")
    if unmatched:
        warnings.warn(f"{len(unmatched)} of {len(requant) + len(bounds)} min/max log entries match no int8 unit and "
                      f"were ignored ({len(ranges)} ranges taken from the others): {', '.join(sorted(unmatched)[:5])}",
                      stacklevel=3)
    return ranges


def _log_ranges(log) -> tuple[dict, dict]:
    """({name: (min, max)} of the requantize entries, {tensor: (min or None, max or None)} of __min/__max entries)."""
    if isinstance(log, dict):
        return dict(log), {}
    requant, bounds = {}, {}
    readers = ((read_min_max_log, None), (read_min_log, 0), (read_max_log, 1))
    for reader, side in readers:
        try:
            found = reader(log)
        except CalibrationDataError as exc:
            if "holds no" not in str(exc):
                raise
            continue
        if side is None:
            requant = found
            continue
        for name, value in found.items():
            tensor = _logged_tensor(name)
            if tensor is None:
                continue
            pair = list(bounds.get(tensor, (None, None)))
            pair[side] = value
            bounds[tensor] = tuple(pair)
    if not requant and not bounds:
        raise CalibrationDataError(f"the min/max log {log if isinstance(log, (str, os.PathLike)) and len(str(log)) < 200 else ''} "
                                   "holds no __requant_min_max, __min or __max entries; give the log of a run of the "
                                   "graph with insert_logging (or kquant quantize --save-stages)")
    return requant, bounds


def _logged_tensor(name: str) -> str | None:
    for pattern in _INPUT_RANGE:
        match = pattern.fullmatch(name)
        if match:
            node, _, port = match.group("tensor").partition(_PORT)
            return f"{node}:{port or 0}"
    return None


def write_min_max_log(ranges: dict, units, path) -> Path:
    """Write ``ranges`` in the seeds' log format, atomically: a ``__requant_min_max`` entry per conv/matmul output
    (named after its anchor, as Intel's quantize_graph names it) and ``__min``/``__max`` entries for every other
    tensor, so ``--min-max-log`` / ``convert(min_max_log=...)`` can freeze them again."""
    outputs = {unit.output_tensor: unit.anchor for unit in units if unit.weighted}
    lines = []
    for tensor, (low, high) in sorted(ranges.items()):
        if tensor in outputs:
            lines.append(f";{outputs[tensor]}_eightbit_requant_range__print__;__requant_min_max:[{low!r}][{high!r}]")
            continue
        node, port = node_name(tensor), tensor.rpartition(":")[2]
        name = node if port in ("", "0") else f"{node}{_PORT}{port}"
        lines.append(f";kquant_eightbit_min_{name}__print__;__min:[{low!r}]")
        lines.append(f";kquant_eightbit_max_{name}__print__;__max:[{high!r}]")
    with atomic_write(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Path(path)
