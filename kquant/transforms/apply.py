"""Run a list of transforms on a GraphDef, a FrozenGraph or a .pb/.pbtxt file; stock ones in batches through the C++ tool."""

from __future__ import annotations

import difflib
import itertools
import os
import warnings
from pathlib import Path

from tensorflow.core.framework import graph_pb2

from kquant.arguments import check_type, invalid, names_list
from kquant.errors import KQuantError, TransformError, first_line
from kquant.graph import FrozenGraph, check_output_is_not_input, load_graph_def, save_graph_def
from kquant.graphdef import check_nodes_exist, node_name
from kquant.summarize import summarize_graph
from kquant.transforms.context import TransformContext
from kquant.transforms.parse import TransformSpec, parse_transforms
from kquant.transforms.registry import declared_parameters, python_transforms
from kquant.transforms.stock import STOCK_TRANSFORMS, run_stock

def apply_transforms(graph, transforms, inputs=None, outputs=None, *, skip_failing=False):
    """Apply ``transforms`` (strings as the Graph Transform Tool takes them) to a GraphDef or FrozenGraph.

    Returns the same type, never editing ``graph``. ``inputs``/``outputs`` (node or tensor names, one
    string or a list) default to the FrozenGraph's, or to what summarize_graph finds. With ``skip_failing``
    (kquant's own lists, whose every transform keeps the graph's function) a transform that fails is skipped
    with one warning naming it, and the others still run.
    """
    frozen = graph if isinstance(graph, FrozenGraph) else None
    graph_def = frozen.graph_def if frozen else graph
    if not isinstance(graph_def, graph_pb2.GraphDef):
        raise invalid("graph", graph, "a GraphDef or a FrozenGraph (for a file use kquant.transform_graph)")
    _check_transforms_argument(transforms)
    inputs, outputs = names_list("inputs", inputs, optional=True), names_list("outputs", outputs, optional=True)
    original = graph_def
    specs = parse_transforms(transforms)
    _check_known(specs)
    inputs, outputs = _endpoints(graph_def, frozen, inputs, outputs)
    for is_stock, group in itertools.groupby(specs, key=lambda spec: spec.name in STOCK_TRANSFORMS):
        group = list(group)
        if is_stock:
            graph_def = run_stock(graph_def, group, inputs, outputs, skip_failing=skip_failing)
        else:
            for spec in group:
                graph_def = _run_python(graph_def, TransformContext(inputs, outputs, spec), skip_failing)
    if graph_def is original:  # nothing changed: still hand back a graph of its own
        graph_def = graph_pb2.GraphDef()
        graph_def.CopyFrom(original)
    return FrozenGraph(graph_def, frozen.inputs, frozen.outputs) if frozen else graph_def


def transform_graph(path_to_model, save_dir, file_name, inputs, outputs, transforms) -> Path:
    """Read a .pb/.pbtxt graph, apply ``transforms`` and write ``save_dir/file_name`` atomically; returns its path.

    The signature of ModelQuantization's ``transform_graph``; ``inputs``/``outputs`` may be None to detect them.
    """
    check_type("path_to_model", path_to_model, (str, os.PathLike), "a .pb/.pbtxt path")
    check_type("save_dir", save_dir, (str, os.PathLike), "a directory path")
    if not isinstance(file_name, str) or not file_name or Path(file_name).name != file_name:
        raise invalid("file_name", file_name, "a file name such as 'model_opt.pb'")
    _check_transforms_argument(transforms)
    output = Path(os.fspath(save_dir)) / file_name
    check_output_is_not_input(output, path_to_model)
    result = apply_transforms(load_graph_def(path_to_model), transforms, inputs, outputs)
    return save_graph_def(result, output)


def _check_transforms_argument(transforms) -> None:
    if isinstance(transforms, (str, TransformSpec)):
        return
    if isinstance(transforms, (list, tuple)) and all(isinstance(t, (str, TransformSpec)) for t in transforms):
        return
    raise invalid("transforms", transforms, "a transform string such as 'fold_constants(ignore_errors=true) "
                  "fold_batch_norms', or a list of them")


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
        _check_arguments(spec)


def _check_arguments(spec) -> None:
    """Each argument of ``spec`` is one its transform declares, with a value of the declared kind."""
    declared = declared_parameters(spec.name)
    for key, values in spec.params:
        if key not in declared:
            error = TransformError(f"{spec.where()} takes no argument '{key}'; it accepts {', '.join(sorted(declared))}")
            error.position = spec.offset
            raise error
        for value in values:
            if not _VALUE_CHECKS[declared[key]](value):
                error = TransformError(f"{spec.where()}: {key}={value!r} is not {_KIND_TEXT[declared[key]]}")
                error.position = spec.offset
                raise error


def _is_dtype(value: str) -> bool:
    from tensorflow.python.framework import dtypes

    try:
        dtypes.as_dtype("float32" if value == "float" else "float64" if value == "double" else value)
        return True
    except TypeError:
        return False


def _is_number(value: str) -> bool:
    try:
        float(value)
        return True
    except ValueError:
        return False


_VALUE_CHECKS = {
    "bool": lambda v: v.lower() in ("true", "false", "1", "0", "yes", "no"),
    "int": lambda v: v.lstrip("+-").isdigit(),
    "float": _is_number,
    "string": lambda v: True,
    "dtype": _is_dtype,
    "shape": lambda v: all(d.strip().lstrip("-").isdigit() for d in v.split(",")) if v.strip() else False,
}
_KIND_TEXT = {"bool": "true or false", "int": "an integer", "float": "a number", "string": "a string",
              "dtype": "a TensorFlow dtype such as float, int32 or quint8", "shape": "a shape such as \"1,224,224,3\""}


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


def _run_python(graph_def, context: TransformContext, skip_failing=False):
    transform = python_transforms()[context.name]
    ignore_errors = context.get_one_bool("ignore_errors", False)
    try:
        return transform(graph_def, context)
    except Exception as exc:
        if ignore_errors or skip_failing:  # skip the transform whatever failed, as the C++ tool does
            why = "ignore_errors=true" if ignore_errors else "the graph keeps its function without it"
            warnings.warn(f"{context.name} failed and was skipped ({why}): {first_line(exc)}", stacklevel=2)
            return graph_def
        if isinstance(exc, KQuantError):
            raise
        raise TransformError(  # a malformed graph trips the transform somewhere inside: name the transform
            f"{context.spec.where()} failed ({type(exc).__name__}: {first_line(exc)}); the graph may be malformed: "
            "check that it imports (kquant summarize), or add ignore_errors=true to skip this transform"
        ) from exc
