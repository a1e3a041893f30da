"""The int8 pipeline, one function per stage: optimize -> plan -> calibrate -> rewrite (ranges frozen, requantize
fused) -> merge identical nodes.

``prepare`` does the fp32 side once (optimize, exclusions, stems, plan); ``quantize_frozen`` chains the rest
and, with an ``eval_fn``, runs accuracy-aware tuning (tuning.py).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import warnings

from kquant.data import iter_batches
from kquant.errors import QuantizationError
from kquant.graph import FrozenGraph
from kquant.preflight import preflight
from kquant.quantization.bf16 import units_to_bf16
from kquant.quantization.collect import calibrate
from kquant.quantization.config import QuantizationConfig
from kquant.quantization.cpu import has_vnni
from kquant.quantization.encoding import RewriteOptions
from kquant.quantization.ops import Unit
from kquant.quantization.plan import find_units, stem_convs, tensors_to_calibrate
from kquant.quantization.rewrite import rewrite_graph
from kquant.quantization.tuning import CALIBRATION_ALTERNATIVES, rank_by_sensitivity, score_of, tune
from kquant.runtime import Predictor, ensure_onednn


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
    excluded_nodes: tuple = ()        # the caller's, as fp32 node names
    stems: tuple = ()                 # anchors of the image stems kept fp32 (stem="fp32")
    layers: dict = dataclasses.field(default_factory=dict)  # unit anchor -> its Keras layer (kquant.names.LayerNames)
    prepared: "Prepared | None" = None  # the fp32 side it was built from (for the report and the saved stages)
    target: str = "tensorflow"        # the runtime predict and tuning ran it on (QuantizationConfig.target)
    openvino: object = None           # its OpenVINO form (openvino.Lowered) where tuning already built it


@dataclasses.dataclass(frozen=True)
class Prepared:
    """The fp32 side of one quantization, computed once: the optimized graph, the exclusions as its node names,
    the image stems, and the plan with and without the stems."""

    frozen: FrozenGraph
    fp32: FrozenGraph
    excluded_ops: tuple
    excluded_nodes: tuple
    stems: tuple
    planned: list      # every unit but the excluded ones
    candidates: list   # the units to run in int8: ``planned`` without the stems

    def build(self, ranges, options: RewriteOptions, *, fell_back=(), fallback="fp32", extra_outputs=()):
        """(the int8 graph with ``fell_back`` units kept in ``fallback`` precision, its int8 units as emitted);
        ``extra_outputs`` stay fetchable."""
        in_bf16 = [u for u in self.planned if u.anchor in set(fell_back) and u.weighted] if fallback == "bf16" else []
        graph_def, emitted, outputs = self.rewrite(ranges, options, fell_back=fell_back, extra_outputs=extra_outputs,
                                                   intact=[name for u in in_bf16 for name in u.nodes])
        if in_bf16:
            graph_def = units_to_bf16(graph_def, in_bf16)
        return merge_duplicates(FrozenGraph(graph_def, self.fp32.inputs, self.fp32.outputs), keep=outputs), emitted

    def rewrite(self, ranges, options: RewriteOptions, *, fell_back=(), extra_outputs=(), intact=()):
        """(the int8 GraphDef before identical nodes are merged, the units emitted, the outputs kept); ``intact``:
        see ``rewrite_graph``."""
        units = self.candidates if not fell_back else plan(self.fp32, self.excluded_ops,
                                                           self.excluded_nodes + self.stems + tuple(fell_back))
        missing = sorted(set(tensors_to_calibrate(units)) - set(ranges))
        if missing:
            raise QuantizationError(f"no calibrated range for {', '.join(missing[:5])}; calibrate on data that reaches them")
        outputs = self.fp32.output_names + list(extra_outputs)
        graph_def, emitted = rewrite_graph(self.fp32.graph_def, units, ranges, outputs, options, intact)
        return graph_def, emitted, outputs


def optimize(frozen: FrozenGraph) -> FrozenGraph:
    """The fp32 graph cleaned and folded for quantization (batch norms into weights, static shapes)."""
    from kquant.transforms import optimize_for_inference

    return optimize_for_inference(inline_function_calls(frozen))


FUNCTION_CALL_OPS = ("PartitionedCall", "StatefulPartitionedCall")


def inline_function_calls(frozen: FrozenGraph) -> FrozenGraph:
    """``frozen`` with the calls into its function library inlined (depthwise-grouped convolutions, once their
    filters are constants, by inline_conv_calls; the rest by the stock inline_partitionedcall), so that the
    convolutions inside are seen and quantized; a call that stays runs fp32, with one warning naming it."""
    from kquant.transforms import apply_transforms

    if not any(node.op in FUNCTION_CALL_OPS for node in frozen.graph_def.node):
        return frozen
    inlined = apply_transforms(frozen, ["remove_freeze_leftovers", "inline_conv_calls", "inline_partitionedcall"])
    left = [node.name for node in inlined.graph_def.node if node.op in FUNCTION_CALL_OPS]
    if left:
        warnings.warn(f"{len(left)} call(s) into the graph's function library could not be inlined and run fp32 "
                      f"({', '.join(left[:3])}{', ...' if len(left) > 3 else ''})", stacklevel=3)
    return inlined


def prepare(frozen: FrozenGraph, config: QuantizationConfig) -> Prepared:
    """Optimize ``frozen`` and plan it: exclusions (nodes or Keras layer names, also nodes of the graph before
    optimizing; one that matches nothing raises ConfigurationError naming the closest) and, with
    ``stem="fp32"``, the image stems (``plan.stem_convs``) kept out of int8.

    A stem reads the raw image: its input's 8-bit rounding is the largest single error on fer (25.5 dB
    output SNR from it alone, 20.1 dB from every activation), and with at most 4 input channels its
    convolution is a small share of the work.
    """
    from kquant.names import check_op_types, resolve_nodes

    fp32 = optimize(frozen)
    check_op_types(fp32.graph_def, config.excluded_ops, "the excluded op type")
    excluded_nodes = resolve_nodes(fp32.graph_def, config.excluded_nodes, "the excluded node", also=frozen.graph_def)
    planned = plan(fp32, config.excluded_ops, excluded_nodes)
    stems = tuple(stem_convs(fp32.graph_def, planned)) if config.stem == "fp32" else ()
    candidates = plan(fp32, config.excluded_ops, excluded_nodes + stems) if stems else planned
    return Prepared(frozen, fp32, config.excluded_ops, excluded_nodes, stems, planned, candidates)


def plan(frozen: FrozenGraph, excluded_ops=(), excluded_nodes=()) -> list[Unit]:
    return find_units(frozen.graph_def, excluded_ops, excluded_nodes)


def merge_duplicates(graph: FrozenGraph, keep=None) -> FrozenGraph:
    """``graph`` with identical nodes merged: the Graph Transform Tool's merge_duplicate_nodes, which folds
    the many equal range scalars (fer's int8 graph: 234 -> 189 nodes). The nodes in ``keep`` (default: the
    outputs) keep their names."""
    from kquant.transforms import apply_transforms

    return apply_transforms(graph, ["merge_duplicate_nodes"], outputs=list(keep or graph.output_names))


def quantize_frozen(frozen: FrozenGraph, data, config: QuantizationConfig | None = None, *, progress=True,
                    ranges=None, eval_fn=None) -> QuantizationResult:
    """Run every stage; ``ranges`` (tensor -> (min, max), or a function of the ``Prepared`` graph giving them, e.g.
    from a seed min/max log) skips calibration.

    With ``eval_fn(predict) -> float`` (higher is better), tune until the drop against fp32 is at
    most ``config.max_accuracy_drop`` (relative to the fp32 score when ``config.relative``) or
    ``config.max_trials`` ran out. With ``config.target="openvino"`` each candidate is scored as OpenVINO runs
    its export form (the same units, ranges and fallbacks lowered through the QDQ graph).
    """
    ensure_onednn()
    config = config or QuantizationConfig()
    config.check_runtime()
    prepared = prepare(frozen, config)
    fp32, candidates = prepared.fp32, prepared.candidates
    if not any(u.weighted for u in candidates):
        reason = ("the model's only quantizable op is its image stem, kept fp32 (stem='int8' quantizes it)" if prepared.stems
                  else "the model has no quantizable Conv2D/DepthwiseConv2D/MatMul")
        warnings.warn(f"{reason}; returning it in fp32", stacklevel=3)
        return QuantizationResult(fp32, fp32, [], {}, target=config.target)
    if callable(ranges):
        ranges = ranges(prepared)
    options = RewriteOptions(per_channel=config.per_channel, pair_safe_weights=not has_vnni(), kernels=config.kernels)
    sample: list = []
    calibrated = {}

    def ranges_for(method):
        if method not in calibrated:
            calibrated[method] = ranges if ranges is not None else calibrate(
                fp32, candidates, data, method=method, batch_size=config.batch_size, progress=progress,
                keep_first=sample if not sample else None, max_batches=config.max_batches,
                **config.calibration_options)
        return calibrated[method]

    emitted = {}  # (calibration, fell_back) -> the units its graph runs in int8
    lowered = {}  # (calibration, fell_back) -> its OpenVINO form, for target="openvino"

    def attempt(method, fell_back):
        graph, emitted[method, tuple(fell_back)] = prepared.build(ranges_for(method), options, fell_back=fell_back,
                                                                  fallback=config.fallback)
        if len(emitted) == 1 and sample:  # the first int8 graph runs in a child before anyone runs it here
            preflight(graph.graph_def, graph.input_names, graph.output_names, sample[0], "the int8 graph")
        return graph

    def on_target(graph, method, fell_back):
        """What eval_fn scores for a candidate: ``graph`` in TF, or its export form in OpenVINO."""
        if config.target == "tensorflow":
            return Predictor(graph)
        from kquant.quantization.openvino import OpenVinoRunner, lower

        key = method, tuple(fell_back)
        lowered[key] = lower(fp32, emitted[key], ranges_for(method), options)
        return Predictor(fp32, runner=lambda: OpenVinoRunner(lowered[key].model, fp32.inputs))

    if ranges is not None and data is not None:  # ranges from a log: still keep a batch for the per-layer report
        sample.append(next(iter(iter_batches(data, fp32.inputs, config.batch_size, role="calibration data"))))
    chosen, fell_back, trials = config.calibration, (), []
    if eval_fn is None:
        int8 = attempt(chosen, ())
    else:
        def attempt_only(only):
            return attempt(config.calibration, tuple(u.anchor for u in candidates if u.weighted and u.anchor not in only))

        reference = Predictor(fp32)
        baseline = score_of(eval_fn, reference)
        reference.close()
        ranges_for(config.calibration)
        ranked = rank_by_sensitivity(fp32, candidates, attempt_only, sample[0]) if sample else candidates
        alternatives = [config.calibration] + ([m for m in CALIBRATION_ALTERNATIVES if m != config.calibration]
                                               if ranges is None and _reiterable(data) else [])
        int8, chosen, fell_back, trials = tune(
            baseline, eval_fn, attempt, ranked, calibrations=alternatives, max_accuracy_drop=config.max_accuracy_drop,
            relative=config.relative, max_trials=config.max_trials, progress=progress, predictor=on_target)
    return QuantizationResult(int8, fp32, emitted[chosen, tuple(fell_back)], ranges_for(chosen), options, chosen,
                              tuple(fell_back), config.fallback, trials, sample[0] if sample else None,
                              config.excluded_ops, prepared.excluded_nodes, prepared.stems,
                              unit_layers(fp32, frozen, prepared.planned), prepared, config.target,
                              lowered.get((chosen, tuple(fell_back))))


def unit_layers(fp32: FrozenGraph, frozen: FrozenGraph, units) -> dict:
    """Unit anchor -> the Keras layer it computes, the one name the summary, the stem and the report show."""
    from kquant.names import LayerNames

    layers = LayerNames(fp32.graph_def, before=frozen.graph_def)
    return {unit.anchor: layers.of(unit.anchor) for unit in units}


def _reiterable(data) -> bool:
    return not isinstance(data, collections.abc.Iterator)
