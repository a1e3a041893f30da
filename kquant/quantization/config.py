"""QuantizationConfig: every option of ``kquant.quantize``, checked once when it is built.

``quantize``, ``GraphConverter`` and ``kquant quantize`` all build one, so a wrong option fails the same way
everywhere: a ConfigurationError naming the parameter, the value and what is expected.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import itertools
import types
import warnings
from typing import Any, Literal, Mapping, get_args

import numpy as np

from kquant.arguments import check_bool, check_choice, check_int, check_number, invalid, names_list
from kquant.data import DEFAULT_BATCH_SIZE

Calibration = Literal["minmax", "percentile", "kl", "entropy"]
Stem = Literal["fp32", "int8"]
Fallback = Literal["fp32", "bf16"]
Kernels = Literal["onednn", "public"]
Target = Literal["tensorflow", "openvino"]

DEFAULT_CALIBRATION_SAMPLES = 10_000
"""Calibration stops after this many samples unless ``max_batches`` says otherwise (with one warning when data
was left): ranges settle long before, and a ``dataset.repeat()`` would otherwise never end."""


@dataclasses.dataclass(frozen=True)
class QuantizationConfig:
    """The options of one quantization, validated and normalized (names as tuples, options as a read-only dict)."""

    per_channel: bool = True
    calibration: Calibration = "minmax"
    calibration_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    excluded_ops: tuple[str, ...] = ()
    excluded_nodes: tuple[str, ...] = ()
    stem: Stem = "fp32"
    fallback: Fallback = "fp32"
    kernels: Kernels = "onednn"
    batch_size: int = DEFAULT_BATCH_SIZE
    max_batches: int | None = None     # None: stop after DEFAULT_CALIBRATION_SAMPLES samples
    max_accuracy_drop: float = 0.01
    relative: bool = True
    max_trials: int = 20
    target: Target = "tensorflow"   # the runtime predict and tuning run the model on

    def __post_init__(self):
        set_ = functools.partial(object.__setattr__, self)  # frozen: normalize once, here
        set_("per_channel", check_bool("per_channel", self.per_channel))
        set_("calibration", _calibration_name(self.calibration))
        set_("calibration_options", _calibration_options(self.calibration, self.calibration_options))
        set_("excluded_ops", tuple(names_list("excluded_ops", self.excluded_ops)))
        set_("excluded_nodes", tuple(names_list("excluded_nodes", self.excluded_nodes)))
        for name, kind in (("stem", Stem), ("fallback", Fallback), ("kernels", Kernels), ("target", Target)):
            check_choice(name, getattr(self, name), get_args(kind))
        set_("batch_size", check_int("batch_size", self.batch_size, minimum=1))
        set_("max_batches", check_int("max_batches", self.max_batches, minimum=1, optional=True))
        set_("max_accuracy_drop", check_number("max_accuracy_drop", self.max_accuracy_drop, minimum=0))
        set_("relative", check_bool("relative", self.relative))
        set_("max_trials", check_int("max_trials", self.max_trials, minimum=1))

    def check_runtime(self) -> None:
        """Raise MissingRuntimeError (saying how to install it) unless the target's runtime imports: called before
        any work, so that a missing OpenVINO does not surface after calibration."""
        if self.target == "openvino":
            from kquant.quantization.openvino import import_openvino

            import_openvino()


def limited_batches(batches, max_batches: int | None):
    """The first ``max_batches`` of ``batches``; without a limit, the batches up to DEFAULT_CALIBRATION_SAMPLES samples,
    with one warning when data was left over (so that an endless dataset ends)."""
    if max_batches is not None:
        yield from itertools.islice(batches, max_batches)  # pulls no batch past the last one
        return
    samples = 0
    for count, batch in enumerate(batches):
        if samples >= DEFAULT_CALIBRATION_SAMPLES:
            warnings.warn(f"calibration stopped after {samples} samples ({count} batches) with data left; pass "
                          "max_batches=N (--calib-batches N) to calibrate on more", stacklevel=2)
            return
        samples += len(batch[0]) if batch and np.ndim(batch[0]) else 1
        yield batch


def _calibration_name(method) -> str:
    from kquant.quantization.calibrators import CALIBRATORS

    name = method.strip().lower() if isinstance(method, str) else None
    if name not in CALIBRATORS:
        raise invalid("calibration", method, "one of " + ", ".join(repr(m) for m in CALIBRATORS))
    return name


def _calibration_options(method: str, options) -> Mapping[str, Any]:
    """``options`` checked against the parameters of ``method``'s calibrator (names, and types by their defaults),
    then by building one calibrator, whose own range checks apply."""
    from kquant.quantization.calibrators import CALIBRATORS, make_calibrator

    if options is None:
        options = {}
    if not isinstance(options, Mapping) or not all(isinstance(key, str) for key in options):
        raise invalid("calibration_options", options, "a dict option name -> value, e.g. {'percentile': 99.9}")
    parameters = inspect.signature(CALIBRATORS[method]).parameters
    for key, value in options.items():
        if key not in parameters:
            raise invalid(f"calibration_options[{key!r}]", value,
                          f"an option of calibration {method!r}: {', '.join(parameters) or 'it takes none'}")
        default = parameters[key].default
        if isinstance(default, bool):
            check_bool(f"calibration_options[{key!r}]", value)
        elif isinstance(default, int) or default is None:
            check_int(f"calibration_options[{key!r}]", value, optional=default is None)
        elif isinstance(default, float):
            check_number(f"calibration_options[{key!r}]", value)
    make_calibrator(method, **options)
    return types.MappingProxyType(dict(options))
