"""Keras 3 and tf_keras models (objects, .keras and .h5 files) -> FrozenGraph."""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

import tensorflow as tf

from kquant.converters.function import freeze_concrete_function, name_outputs, sanitize_node_name
from kquant.errors import first_line, ModelFormatError, ModelInputError
from kquant.graph import FrozenGraph, save_graph_def

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
_KERAS_TENSOR_NAME = re.compile(r"keras_tensor(_\d+)?(:\d+)?")
_UNKNOWN_OBJECT = re.compile(r"(?:Could not locate (?:class|function)|Unknown (?:layer|object|[a-z_]+)):? '?([\w.>]+)")


def is_keras_model(obj) -> bool:
    """True for Keras 3 and tf_keras (Keras 2) models, without importing either needlessly."""
    return any(cls.__module__.split(".")[0] in ("keras", "tf_keras") and cls.__name__ in ("Model", "Functional", "Sequential")
               for cls in type(obj).__mro__)


def freeze_keras_model(model, input_shapes=None) -> FrozenGraph:
    """Freeze a Keras 3 or tf_keras model in inference mode (``training=False``).

    Input specs come from the model's own inputs (batch dimension left dynamic) or, for
    subclassed models without them, from ``input_shapes``: one shape, a list, or a dict name -> shape.
    """
    structure, specs = _input_signature(model, input_shapes)

    def call(*flat):
        return model(tf.nest.pack_sequence_as(structure, list(flat)), training=False)

    function = tf.function(call).get_concrete_function(*specs)
    frozen = freeze_concrete_function(function)
    names = _output_names(model, function.structured_outputs, len(frozen.outputs))
    frozen.outputs = tuple(name_outputs(frozen.graph_def, list(frozen.outputs), names))
    return frozen


def load_keras_file(path: str | os.PathLike, custom_objects=None):
    """Load a .keras/.h5 file with Keras 3, falling back to tf_keras for legacy Keras 2 files."""
    path = Path(path)
    if path.suffix.lower() == ".keras" and not zipfile.is_zipfile(path):
        raise ModelFormatError(f"{path} is not a .keras (zip) archive; it is truncated or corrupt: save the model again")
    errors = []
    for loader in (_load_with_keras3, _load_with_tf_keras):
        try:
            return loader(path, custom_objects)
        except ImportError as exc:
            errors.append(f"{loader.__name__}: {exc}")
        except Exception as exc:  # each Keras raises its own mix of ValueError/TypeError/OSError
            errors.append(str(exc))
    unknown = next((match.group(1) for e in errors if (match := _UNKNOWN_OBJECT.search(e))), None)
    if unknown:
        raise ModelFormatError(
            f"{path} uses '{unknown}', a custom class Keras cannot find; pass custom_objects={{'{unknown}': TheClass}} "
            "to kquant.freeze, or export the model as a SavedModel (model.export(DIR)) and freeze that"
        )
    raise ModelFormatError(
        f"{path} could not be loaded as a Keras model ({first_line(errors[0])}); check the file is a complete .keras/.h5 model"
    )


def save_keras_model_to_pb(save_dir, file_name, model, nr_outputs=1, output_node_prefix="output_node") -> Path:
    """Freeze ``model`` and write it to ``save_dir/file_name``; outputs are named ``prefix0``, ``prefix1``, ...

    Seed-compatible helper (ModelQuantization's ``quantization.utils``). Returns the written path.
    """
    frozen = freeze_keras_model(model)
    if nr_outputs != len(frozen.outputs):
        raise ModelInputError(
            f"nr_outputs={nr_outputs} but the model has {len(frozen.outputs)} outputs; pass nr_outputs={len(frozen.outputs)}"
        )
    names = [f"{output_node_prefix}{i}" for i in range(nr_outputs)]
    frozen.outputs = tuple(name_outputs(frozen.graph_def, list(frozen.outputs), names))
    unnamed = [name for name, spec in zip(names, frozen.outputs) if spec.name != f"{name}:0"]
    if unnamed:
        raise ModelInputError(
            f"cannot name the outputs {', '.join(unnamed)}: the name is invalid or another node holds it; "
            "choose another output_node_prefix"
        )
    return save_graph_def(frozen.graph_def, Path(save_dir) / file_name)


def _input_signature(model, input_shapes):
    if input_shapes is not None:
        return _signature_from_shapes(input_shapes)
    try:
        structure = _model_inputs(model)
        flat = tf.nest.flatten(structure)
    except (AttributeError, ValueError) as exc:
        raise ModelInputError(
            f"the model {type(model).__name__} has no known inputs ({first_line(exc)}); "
            "pass input_shapes, e.g. input_shapes=(None, 28, 28, 1) or {'image': (None, 28, 28, 1)}"
        ) from exc
    specs = []
    for i, tensor in enumerate(flat):
        shape = list(tensor.shape)
        if shape:
            shape[0] = None
        dtype = tf.as_dtype(getattr(tensor.dtype, "name", tensor.dtype))
        name = getattr(tensor, "name", "")
        if _KERAS_TENSOR_NAME.fullmatch(name):  # a counter (keras_tensor_16) that changes between processes
            name = "input" if len(flat) == 1 else f"input_{i}"
        specs.append(tf.TensorSpec(shape, dtype, name=sanitize_node_name(name, f"input_{i}")))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        specs = [tf.TensorSpec(s.shape, s.dtype, name=f"input_{i}") for i, s in enumerate(specs)]
    return structure, specs


def _model_inputs(model):
    """The model's input structure; a Keras 3 Sequential never called has it only in ``inputs``."""
    try:
        return model.input
    except AttributeError:
        inputs = model.inputs
        if not inputs:
            raise
        return inputs[0] if len(inputs) == 1 else list(inputs)


def _signature_from_shapes(input_shapes):
    if isinstance(input_shapes, dict):
        specs = [tf.TensorSpec(shape, tf.float32, name=sanitize_node_name(name, f"input_{i}"))
                 for i, (name, shape) in enumerate(sorted(input_shapes.items()))]
        return {name: None for name in input_shapes}, specs  # tf.nest orders dict keys sorted, as specs are
    shapes = list(input_shapes)
    if shapes and all(isinstance(s, (list, tuple)) for s in shapes):
        return [None] * len(shapes), [tf.TensorSpec(s, tf.float32, name=f"input_{i}") for i, s in enumerate(shapes)]
    return None, [tf.TensorSpec(shapes, tf.float32, name="input_0")]


def _output_names(model, structured_outputs, count) -> list[str]:
    if isinstance(structured_outputs, dict):
        names = sorted(structured_outputs)
    else:
        names = list(getattr(model, "output_names", None) or [])
    names = [sanitize_node_name(str(n), f"output_{i}") for i, n in enumerate(names)]
    if len(names) != count or len(set(names)) != count:
        names = [f"output_{i}" for i in range(count)]
    return names


def _load_with_keras3(path, custom_objects):
    import keras

    return keras.models.load_model(path, custom_objects=custom_objects, compile=False)


def _load_with_tf_keras(path, custom_objects):
    import tf_keras

    return tf_keras.models.load_model(path, custom_objects=custom_objects, compile=False)
