"""Run a list of transforms on a GraphDef, a FrozenGraph or a .pb/.pbtxt file; stock ones in batches through the C++ tool."""

from __future__ import annotations

import difflib
import itertools
import os
import warnings
from pathlib import Path

from tensorflow.core.framework import graph_pb2

from kquant.errors import KQuantError, TransformError, first_line
from kquant.graph import FrozenGraph, check_nodes_exist, check_output_is_not_input, load_graph_def, node_name, save_graph_def
from kquant.summarize import summarize_graph
from kquant.transforms.context import TransformContext
from kquant.transforms.parse import parse_transforms
from kquant.transforms.registry import python_transforms
from kquant.transforms.stock import STOCK_TRANSFORMS, run_stock

def apply_transforms(graph, transforms, inputs=None, outputs=None):
    """Apply ``transforms`` (strings as the Graph Transform Tool takes them) to a GraphDef or FrozenGraph.

    Returns the same type, never editing ``graph``. ``inputs``/``outputs`` (node or tensor names, one
    string or a list) default to the FrozenGraph's, or to what summarize_graph finds.
    """
    frozen = graph if isinstance(graph, FrozenGraph) else None
    graph_def = frozen.graph_def if frozen else graph
    if not isinstance(graph_def, graph_pb2.GraphDef):
        raise TypeError(f"apply_transforms takes a GraphDef or a FrozenGraph, not {type(graph).__name__}; "
                        "for a file use kquant.transform_graph")
    original = graph_def
    specs = parse_transforms(transforms)
    _check_known(specs)
    inputs, outputs = _endpoints(graph_def, frozen, inputs, outputs)
    for is_stock, group in itertools.groupby(specs, key=lambda spec: spec.name in STOCK_TRANSFORMS):
        group = list(group)
        if is_stock:
            graph_def = run_stock(graph_def, group, inputs, outputs)
        else:
            for spec in group:
                graph_def = _run_python(graph_def, TransformContext(inputs, outputs, spec))
    if graph_def is original:  # nothing changed: still hand back a graph of its own
        graph_def = graph_pb2.GraphDef()
        graph_def.CopyFrom(original)
    return FrozenGraph(graph_def, frozen.inputs, frozen.outputs) if frozen else graph_def


def transform_graph(path_to_model, save_dir, file_name, inputs, outputs, transforms) -> Path:
    """Read a .pb/.pbtxt graph, apply ``transforms`` and write ``save_dir/file_name`` atomically; returns its path.

    The signature of ModelQuantization's ``transform_graph``; ``inputs``/``outputs`` may be None to detect them.
    """
    output = Path(os.fspath(save_dir)) / file_name
    check_output_is_not_input(output, path_to_model)
    result = apply_transforms(load_graph_def(path_to_model), transforms, inputs, outputs)
    return save_graph_def(result, output)


def all_transform_names() -> list[str]:
    return sorted(set(STOCK_TRANSFORMS) | set(python_transforms()))


def _check_known(specs) -> None:
    known = all_transform_names()
    for spec in specs:
        if spec.name not in known:
            close = difflib.get_close_matches(spec.name, known, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            error = TransformError(f"unknown transform {spec.where()}; {hint}known transforms: {', '.join(known)}")
            error.position = spec.offset
            raise error


def _endpoints(graph_def, frozen, inputs, outputs) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if inputs is None or outputs is None:
        summary = None if frozen else summarize_graph(graph_def)
        if inputs is None:
            inputs = frozen.input_names if frozen else [i.name for i in summary.inputs]
        if outputs is None:
            outputs = frozen.output_names if frozen else [o.name for o in summary.outputs]
    inputs, outputs = _node_names(inputs), _node_names(outputs)
    check_nodes_exist(graph_def, inputs, "input")
    check_nodes_exist(graph_def, outputs, "output")
    return inputs, outputs


def _node_names(names) -> tuple[str, ...]:
    names = [names] if isinstance(names, str) else list(names)
    return tuple(dict.fromkeys(node_name(name) for name in names))


def _run_python(graph_def, context: TransformContext):
    transform = python_transforms()[context.name]
    ignore_errors = context.get_one_bool("ignore_errors", False)
    try:
        return transform(graph_def, context)
    except Exception as exc:
        if ignore_errors:  # skip the transform whatever failed, as the C++ tool does
            warnings.warn(f"{context.name} failed and was skipped (ignore_errors=true): {first_line(exc)}", stacklevel=2)
            return graph_def
        if isinstance(exc, KQuantError):
            raise
        raise TransformError(  # a malformed graph trips the transform somewhere inside: name the transform
            f"{context.spec.where()} failed ({type(exc).__name__}: {first_line(exc)}); the graph may be malformed: "
            "check that it imports (kquant summarize), or add ignore_errors=true to skip this transform"
        ) from exc
