"""The int8 pipeline, one function per stage: optimize -> plan -> calibrate -> rewrite (ranges frozen, requantize
fused) -> strip.

``quantize_frozen`` chains them; with an ``eval_fn`` it runs accuracy-aware tuning (tuning.py).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import warnings

from kquant.data import DEFAULT_BATCH_SIZE, iter_batches
from kquant.errors import ConfigurationError, QuantizationError
from kquant.graph import FrozenGraph
from kquant.preflight import preflight
from kquant.quantization.bf16 import units_to_bf16
from kquant.quantization.calibrate import collect_ranges
from kquant.quantization.cpu import has_vnni
from kquant.quantization.patterns import Unit, find_units, stem_convs
from kquant.quantization.rewrite import KERNELS, RewriteOptions, rewrite_graph
from kquant.quantization.tuning import CALIBRATION_ALTERNATIVES, rank_by_sensitivity, score_of, tune
from kquant.runtime import Predictor, ensure_onednn

FALLBACK_PRECISIONS = ("fp32", "bf16")
STEM_PRECISIONS = ("fp32", "int8")


@dataclasses.dataclass
class QuantizationResult:
    """The int8 graph and what went into it."""

    int8: FrozenGraph
    fp32: FrozenGraph                 # the optimized fp32 graph the int8 one was built from
    units: list[Unit]                 # the units running in int8, as the rewrite emitted them
    ranges: dict
    options: RewriteOptions = RewriteOptions()
    calibration: str = "minmax"
    fell_back: tuple = ()             # anchors of units tuning kept out of int8
    fallback: str = "fp32"
    trials: list = dataclasses.field(default_factory=list)
    sample: list | None = None        # the first calibration batch, for the per-layer report
    excluded_ops: tuple = ()
    excluded_nodes: tuple = ()        # the caller's
    stems: tuple = ()                 # anchors of the image stems kept fp32 (stem="fp32")
    layers: dict = dataclasses.field(default_factory=dict)  # unit anchor -> its Keras layer (kquant.names.LayerNames)


def optimize(frozen: FrozenGraph) -> FrozenGraph:
    """The fp32 graph cleaned and folded for quantization (batch norms into weights, static shapes)."""
    from kquant.transforms import optimize_for_inference

    return optimize_for_inference(inline_function_calls(frozen))


FUNCTION_CALL_OPS = ("PartitionedCall", "StatefulPartitionedCall")


def inline_function_calls(frozen: FrozenGraph) -> FrozenGraph:
    """``frozen`` with the calls into its function library inlined (depthwise-grouped convolutions, once their
    filters are constants, by inline_conv_calls; the rest by the stock inline_partitionedcall), so that the convolutions inside are seen and
    quantized; a call that stays runs fp32, with one warning naming it."""
    from kquant.transforms import apply_transforms

    if not any(node.op in FUNCTION_CALL_OPS for node in frozen.graph_def.node):
        return frozen
    inlined = apply_transforms(frozen, ["remove_freeze_leftovers", "inline_conv_calls", "inline_partitionedcall"])
    left = [node.name for node in inlined.graph_def.node if node.op in FUNCTION_CALL_OPS]
    if left:
        warnings.warn(f"{len(left)} call(s) into the graph's function library could not be inlined and run fp32 "
                      f"({', '.join(left[:3])}{', ...' if len(left) > 3 else ''})", stacklevel=3)
    return inlined


def resolve_exclusions(fp32: FrozenGraph, frozen: FrozenGraph, excluded_ops=(), excluded_nodes=()) -> tuple:
    """The fp32 graph's node names ``excluded_nodes`` stand for (nodes or Keras layer names, also nodes of the
    graph before optimizing); an exclusion that matches nothing raises ConfigurationError naming the closest."""
    from kquant.names import check_op_types, resolve_nodes

    check_op_types(fp32.graph_def, excluded_ops, "the excluded op type")
    return resolve_nodes(fp32.graph_def, excluded_nodes, "the excluded node", also=frozen.graph_def)


def plan(frozen: FrozenGraph, excluded_ops=(), excluded_nodes=()) -> list[Unit]:
    return find_units(frozen.graph_def, excluded_ops, excluded_nodes)


def fp32_stems(fp32: FrozenGraph, excluded_ops=(), excluded_nodes=(), stem="fp32") -> tuple:
    """The image stems to keep fp32: none with ``stem="int8"``, else ``patterns.stem_convs`` of the plan.

    A stem reads the raw image: its input's 8-bit rounding is the largest single error on fer (25.5 dB
    output SNR from it alone, 20.1 dB from every activation), and with at most 4 input channels its
    convolution is a small share of the work.
    """
    if stem not in STEM_PRECISIONS:
        raise ConfigurationError(f"stem={stem!r} is not one of {', '.join(STEM_PRECISIONS)}")
    return tuple(stem_convs(fp32.graph_def, plan(fp32, excluded_ops, excluded_nodes))) if stem == "fp32" else ()


def tensors_to_calibrate(units: list[Unit]) -> list[str]:
    """Every conv/matmul output (its requantize range) and every unit input (a QuantizeV2 range if it enters from fp32)."""
    return sorted({u.output_tensor for u in units if u.kind in ("conv", "matmul")} | {t for u in units for t in u.data_inputs}
                  | {u.summand for u in units if u.summand} | {f"{u.pre_sum}:0" for u in units if u.pre_sum})


def calibrate(frozen: FrozenGraph, units, data, *, method="minmax", batch_size=DEFAULT_BATCH_SIZE, progress=True,
              keep_first=None, max_batches=None, **options):
    """Ranges of ``tensors_to_calibrate(units)`` from at most ``max_batches`` batches (None: the default limit of
    ``DEFAULT_CALIBRATION_SAMPLES`` samples, with a warning when data is left); ``keep_first`` (a list) receives
    the first batch."""
    from kquant.quantization.config import limited_batches

    batches = limited_batches(iter_batches(data, frozen.inputs, batch_size, role="calibration data"), max_batches)
    if keep_first is not None:
        batches = _keeping_first(batches, keep_first)
    return collect_ranges(frozen.graph_def, frozen.input_names, tensors_to_calibrate(units), batches,
                          method=method, progress=progress, **options)


def build(fp32: FrozenGraph, ranges, options: RewriteOptions, *, excluded_ops=(), excluded_nodes=(), fell_back=(),
          fallback="fp32", extra_outputs=()) -> tuple[FrozenGraph, list[Unit]]:
    """(the int8 graph with ``fell_back`` units kept in ``fallback`` precision, its int8 units as emitted);
    ``extra_outputs`` stay fetchable."""
    units = plan(fp32, excluded_ops, tuple(excluded_nodes) + tuple(fell_back))
    missing = sorted(set(tensors_to_calibrate(units)) - set(ranges))
    if missing:
        raise QuantizationError(f"no calibrated range for {', '.join(missing[:5])}; calibrate on data that reaches them")
    outputs = fp32.output_names + list(extra_outputs)
    graph_def, emitted = rewrite_graph(fp32.graph_def, units, ranges, outputs, options)
    if fallback == "bf16" and fell_back:
        kept = [u for u in plan(fp32, excluded_ops, excluded_nodes) if u.anchor in set(fell_back)]
        graph_def = units_to_bf16(graph_def, [u for u in kept if u.kind in ("conv", "matmul")])
    return strip(FrozenGraph(graph_def, fp32.inputs, fp32.outputs), keep=outputs), emitted


def strip(graph: FrozenGraph, keep=None) -> FrozenGraph:
    """``graph`` with identical nodes merged: the Graph Transform Tool's merge_duplicate_nodes, which folds
    the many equal range scalars (fer's int8 graph: 234 -> 189 nodes). The nodes in ``keep`` (default: the
    outputs) keep their names."""
    from kquant.transforms import apply_transforms

    return apply_transforms(graph, ["merge_duplicate_nodes"], outputs=list(keep or graph.output_names))


def quantize_frozen(frozen: FrozenGraph, data, *, per_channel=True, calibration="minmax", excluded_ops=(),
                    excluded_nodes=(), batch_size=DEFAULT_BATCH_SIZE, progress=True, calibration_options=None,
                    ranges=None, eval_fn=None, max_accuracy_drop=0.01, relative=True, max_trials=20,
                    fallback="fp32", kernels="onednn", stem="fp32", max_batches=None) -> QuantizationResult:
    """Run every stage; ``ranges`` (tensor -> (min, max), e.g. from a seed min/max log) skips calibration.
    ``stem="fp32"`` keeps the image stems (``fp32_stems``) out of int8.

    With ``eval_fn(predict) -> float`` (higher is better), tune until the drop against fp32 is at
    most ``max_accuracy_drop`` (relative to the fp32 score when ``relative``) or ``max_trials`` ran out.
    """
    ensure_onednn()
    if fallback not in FALLBACK_PRECISIONS:
        raise ConfigurationError(f"fallback={fallback!r} is not one of {', '.join(FALLBACK_PRECISIONS)}")
    if kernels not in KERNELS:
        raise ConfigurationError(f"kernels={kernels!r} is not one of {', '.join(KERNELS)}")
    fp32 = optimize(frozen)
    excluded_nodes = resolve_exclusions(fp32, frozen, excluded_ops, excluded_nodes)
    stems = fp32_stems(fp32, excluded_ops, excluded_nodes, stem)
    kept_fp32 = excluded_nodes + stems
    candidates = plan(fp32, excluded_ops, kept_fp32)
    if not any(u.kind in ("conv", "matmul") for u in candidates):
        reason = ("the model's only quantizable op is its image stem, kept fp32 (stem='int8' quantizes it)" if stems
                  else "the model has no quantizable Conv2D/DepthwiseConv2D/MatMul")
        warnings.warn(f"{reason}; returning it in fp32", stacklevel=3)
        return QuantizationResult(fp32, fp32, [], {})
    options = RewriteOptions(per_channel=per_channel, pair_safe_weights=not has_vnni(), kernels=kernels)
    sample: list = []
    calibrated = {}

    def ranges_for(method):
        if method not in calibrated:
            calibrated[method] = ranges if ranges is not None else calibrate(
                fp32, candidates, data, method=method, batch_size=batch_size, progress=progress,
                keep_first=sample if not sample else None, max_batches=max_batches, **(calibration_options or {}))
        return calibrated[method]

    emitted = {}  # (calibration, fell_back) -> the units its graph runs in int8

    def attempt(method, fell_back):
        graph, emitted[method, tuple(fell_back)] = build(
            fp32, ranges_for(method), options, excluded_ops=excluded_ops, excluded_nodes=kept_fp32,
            fell_back=fell_back, fallback=fallback)
        if len(emitted) == 1 and sample:  # the first int8 graph runs in a child before anyone runs it here
            preflight(graph.graph_def, graph.input_names, graph.output_names, sample[0], "the int8 graph")
        return graph

    if ranges is not None and data is not None:  # ranges from a log: still keep a batch for the per-layer report
        sample.append(next(iter(iter_batches(data, fp32.inputs, batch_size, role="calibration data"))))
    chosen, fell_back, trials = calibration, (), []
    if eval_fn is None:
        int8 = attempt(calibration, ())
    else:
        def attempt_only(only):
            others = tuple(u.anchor for u in candidates if u.kind in ("conv", "matmul") and u.anchor not in only)
            return attempt(calibration, others)

        reference = Predictor(fp32)
        baseline = score_of(eval_fn, reference)
        reference.close()
        ranges_for(calibration)
        ranked = rank_by_sensitivity(fp32, candidates, attempt_only, sample[0]) if sample else candidates

        alternatives = [calibration] + ([m for m in CALIBRATION_ALTERNATIVES if m != calibration]
                                        if ranges is None and _reiterable(data) else [])
        int8, chosen, fell_back, trials = tune(
            baseline, eval_fn, attempt, ranked, calibrations=alternatives,
            max_accuracy_drop=max_accuracy_drop, relative=relative, max_trials=max_trials, progress=progress)
    return QuantizationResult(int8, fp32, emitted[chosen, tuple(fell_back)], ranges_for(chosen), options, chosen, tuple(fell_back), fallback,
                              trials, sample[0] if sample else None, tuple(excluded_ops), excluded_nodes, stems,
                              unit_layers(fp32, frozen, plan(fp32)))


def unit_layers(fp32: FrozenGraph, frozen: FrozenGraph, units) -> dict:
    """Unit anchor -> the Keras layer it computes, the one name the summary, the stem and the report show."""
    from kquant.names import LayerNames

    layers = LayerNames(fp32.graph_def, before=frozen.graph_def)
    return {unit.anchor: layers.of(unit.anchor) for unit in units}


def _keeping_first(batches, keep):
    for batch in batches:
        if not keep:
            keep.append(batch)
        yield batch


def _reiterable(data) -> bool:
    return not isinstance(data, collections.abc.Iterator)
