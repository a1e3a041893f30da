"""Every model format -> one FrozenGraph: ``freeze``."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from tensorflow.core.framework import graph_pb2

from kquant.arguments import check_type, names_list
from kquant.converters.checkpoint import freeze_with_checkpoint
from kquant.converters.function import freeze_concrete_function
from kquant.converters.graph_def import frozen_from_graph_def, with_input_shapes
from kquant.converters.keras import KERAS_SUFFIXES, freeze_keras_model, is_keras_model, load_keras_file
from kquant.converters.saved_model import freeze_saved_model
from kquant.errors import ConfigurationError, ModelFormatError, UnsafeModelError
from kquant.files import checked_path
from kquant.graph import GRAPH_SUFFIXES, SAVED_MODEL_FILES, FrozenGraph, load_graph_def

__all__ = ["freeze"]


def freeze(model, *, signature=None, outputs=None, input_shapes=None, checkpoint=None, custom_objects=None,
           safe_mode=True) -> FrozenGraph:
    """Turn ``model`` into a FrozenGraph (variables folded to constants, inputs and outputs known).

    ``model`` may be a Keras 3 or tf_keras model, a .keras/.h5 file, a SavedModel directory
    (``signature`` picks one, default ``serving_default``), a .pb/.pbtxt GraphDef (frozen, or a TF1
    graph with ``checkpoint``), a GraphDef, a FrozenGraph or a concrete ``tf.function``.
    ``outputs`` keeps only the named outputs (one name or a list); ``input_shapes`` fixes input shapes (one
    shape or a dict name -> shape) and gives subclassed Keras models their signature. A .keras/.h5 file
    holding Python code (a Lambda layer) is refused unless ``safe_mode=False``: loading it runs that code.
    An option that does not apply to ``model`` (``signature`` for a .pb, ``checkpoint`` for a Keras file)
    is an error, not ignored.
    """
    outputs = check_freeze_args(model, signature, outputs, checkpoint, custom_objects, safe_mode)
    if is_keras_model(model):
        return _select_outputs(freeze_keras_model(model, input_shapes), outputs)
    if _is_keras_path(model):
        keras_model = load_keras_file(model, custom_objects, safe_mode)
        return _select_outputs(freeze_keras_model(keras_model, input_shapes), outputs)
    if isinstance(model, FrozenGraph):
        frozen = _select_outputs(model, outputs)
    elif isinstance(model, graph_pb2.GraphDef):
        frozen = _from_graph_def(model, outputs, checkpoint, "the GraphDef")
    elif isinstance(model, (str, os.PathLike)):
        frozen = _from_path(checked_path(model), signature, outputs, checkpoint)
    elif hasattr(model, "structured_input_signature") and hasattr(model, "graph"):
        frozen = _select_outputs(freeze_concrete_function(model), outputs)
    else:
        raise ModelFormatError(
            f"kquant cannot freeze a {type(model).__module__}.{type(model).__name__}; pass a Keras model, a .keras/.h5 "
            "file, a SavedModel directory, a .pb/.pbtxt graph, a GraphDef or a concrete tf.function"
        )
    if input_shapes is not None:
        frozen = with_input_shapes(frozen, input_shapes)
    if safe_mode:
        refuse_file_access(frozen.graph_def, model)
    return frozen


# Ops that touch files or call back into Python when the graph runs (calibration runs it): refused in safe mode.
FILE_AND_PYTHON_OPS = frozenset({"WriteFile", "ReadFile", "MatchingFiles", "Save", "SaveV2", "SaveSlices",
                                 "MergeV2Checkpoints", "ImmutableConst", "PyFunc", "PyFuncStateless", "EagerPyFunc"})


def refuse_file_access(graph_def, model) -> None:
    """Raise UnsafeModelError if the graph (or a function of its library) reads or writes files or calls Python."""
    nodes = list(graph_def.node) + [n for function in graph_def.library.function for n in function.node_def]
    for node in nodes:
        to_file = node.op == "PrintV2" and node.attr["output_stream"].s.startswith(b"file://")
        if node.op in FILE_AND_PYTHON_OPS or to_file:
            source = model if isinstance(model, (str, os.PathLike)) else "the model"
            raise UnsafeModelError(f"{source} holds node {node.name} ({node.op}), which reads or writes files or runs "
                                   "Python when the graph runs, as calibration does; kquant runs no such op from a model "
                                   "unless asked: if you trust it, pass safe_mode=False (--unsafe-deserialization)")


def check_freeze_args(model, signature, outputs, checkpoint, custom_objects, safe_mode) -> list[str] | None:
    """Check freeze's options against their types and against ``model``; returns ``outputs`` as a list (or None)."""
    check_type("signature", signature, str, "a signature name such as 'serving_default'", optional=True)
    check_type("checkpoint", checkpoint, (str, os.PathLike), "a checkpoint prefix such as 'run/model.ckpt'", optional=True)
    check_type("custom_objects", custom_objects, dict, "a dict name -> class", optional=True)
    check_type("safe_mode", safe_mode, bool, "True or False")
    outputs = names_list("outputs", outputs, optional=True)
    kind = _kind(model)
    if kind == "missing":
        return outputs  # freeze says the path does not exist
    if signature is not None and kind != "SavedModel":
        raise ConfigurationError(f"signature={signature!r} applies to SavedModel directories only and "
                                 f"{_describe(model, kind)}; drop the signature (--signature)")
    if checkpoint is not None and kind != "GraphDef":
        raise ConfigurationError(f"checkpoint applies to TF1 GraphDefs only and {_describe(model, kind)}; "
                                 "drop the checkpoint (--checkpoint)")
    if custom_objects is not None and kind != "Keras":
        raise ConfigurationError(f"custom_objects applies to Keras files only and {_describe(model, kind)}; drop it")
    return outputs


def _kind(model) -> str:
    if is_keras_model(model) or _is_keras_path(model):
        return "Keras"
    if isinstance(model, (FrozenGraph, graph_pb2.GraphDef)):
        return "GraphDef"
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not os.path.exists(path):
            return "missing"
        if path.suffix.lower() in GRAPH_SUFFIXES and path.name not in SAVED_MODEL_FILES:
            return "GraphDef"
        with contextlib.suppress(OSError):
            if path.is_dir():
                return "SavedModel"
    return "other"


def _describe(model, kind) -> str:
    what = {"Keras": "a Keras model", "GraphDef": "a GraphDef", "SavedModel": "a SavedModel"}.get(kind, "not a SavedModel")
    return f"{model if isinstance(model, (str, os.PathLike)) else 'the model'} is {what}"


def _from_path(path: Path, signature, outputs, checkpoint) -> FrozenGraph:
    if path.is_dir():
        return _select_outputs(freeze_saved_model(path, signature), outputs)
    suffix = path.suffix.lower()
    if suffix in GRAPH_SUFFIXES:
        return _from_graph_def(load_graph_def(path), outputs, checkpoint, str(path))
    raise ModelFormatError(
        f"{path} has an unknown suffix '{suffix}'; kquant reads .keras, .h5, .pb, .pbtxt files and SavedModel directories"
    )


def _from_graph_def(graph_def, outputs, checkpoint, source) -> FrozenGraph:
    if checkpoint is not None:
        graph_def = freeze_with_checkpoint(graph_def, str(checkpoint), outputs)
    return frozen_from_graph_def(graph_def, outputs=outputs, source=source)


def _select_outputs(frozen: FrozenGraph, outputs) -> FrozenGraph:
    if not outputs:
        return frozen
    return frozen_from_graph_def(frozen.graph_def, inputs=frozen.input_names, outputs=list(outputs))


def _is_keras_path(model) -> bool:
    if not isinstance(model, (str, os.PathLike)) or Path(model).suffix.lower() not in KERAS_SUFFIXES:
        return False
    with contextlib.suppress(OSError):
        return not Path(model).is_dir()
    return True
