"""Keras 3 and tf_keras models (objects, .keras and .h5 files) -> FrozenGraph."""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path

import tensorflow as tf

from kquant.converters.function import freeze_concrete_function, name_outputs, sanitize_node_name
from kquant.errors import ConfigurationError, error_line, first_line, ModelFormatError, ModelInputError, UnsafeModelError
from kquant.files import check_fits_in_memory, checked_path, reading
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

    try:
        function = tf.function(call).get_concrete_function(*specs)
    except (ValueError, TypeError) as exc:
        if input_shapes is None:
            raise ModelFormatError(f"the model {type(model).__name__} cannot be traced ({error_line(exc)}); "
                                   "check that it runs on a batch of its inputs") from None
        raise ConfigurationError(f"input_shapes={input_shapes!r} does not fit the model ({error_line(exc)}); give "
                                 "each input's shape with None for the batch, e.g. input_shapes=(None, 28, 28, 1)") from None
    try:
        frozen = freeze_concrete_function(function)
    except (ValueError, TypeError) as exc:
        stateful = [layer.name for layer in getattr(model, "layers", []) if getattr(layer, "stateful", False)]
        if stateful:
            raise ModelFormatError(f"layer '{stateful[0]}' is stateful (it keeps state between calls), which a frozen "
                                   "graph cannot hold; rebuild the model with stateful=False and copy the weights "
                                   "(set_weights)") from None
        raise ModelFormatError(f"the model {type(model).__name__} cannot be frozen ({error_line(exc)})") from None
    names = _output_names(model, function.structured_outputs, len(frozen.outputs))
    frozen.outputs = tuple(name_outputs(frozen.graph_def, list(frozen.outputs), names))
    return frozen


def load_keras_file(path: str | os.PathLike, custom_objects=None, safe_mode: bool = True):
    """Load a .keras/.h5 file with Keras 3, falling back to tf_keras for legacy Keras 2 files.

    With ``safe_mode`` (the default) a file holding Python code (a Lambda layer's lambda) is refused before
    either Keras reads it: tf_keras runs an .h5 file's lambdas as it loads them, whatever its own safe mode says.
    """
    path = checked_path(path, directory_ok=False)
    if path.suffix.lower() == ".keras" and not zipfile.is_zipfile(path):
        raise ModelFormatError(f"{path} is not a .keras (zip) archive; it is truncated or corrupt: save the model again")
    if safe_mode:
        _refuse_code(path)
    errors = []
    for loader in (_load_with_keras3, _load_with_tf_keras):
        try:
            return loader(path, custom_objects, safe_mode)
        except ImportError as exc:
            errors.append(f"{loader.__name__}: {exc}")
        except Exception as exc:  # each Keras raises its own mix of ValueError/TypeError/OSError
            if safe_mode and "safe_mode" in str(exc):
                raise UnsafeModelError(_unsafe_message(path, None)) from None
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


def _refuse_code(path: Path) -> None:
    """Raise UnsafeModelError if the model config in ``path`` holds a lambda (Python bytecode) anywhere."""
    config = _model_config(path)
    with reading(path):
        layer = _layer_with_code(config) if config is not None else None
    if layer is not None:
        raise UnsafeModelError(_unsafe_message(path, layer))


def _unsafe_message(path, layer) -> str:
    where = f"layer '{layer}' (a Lambda)" if layer else "a Lambda layer or lambda function"
    return (f"{path} holds Python code in {where}, which would run as the model loads; kquant runs no code from a "
            "model file unless asked: if you trust the file, pass safe_mode=False (--unsafe-deserialization), "
            "or rebuild the model with a layer class instead of the lambda")


def _model_config(path: Path):
    """The model's JSON config (config.json of a .keras, the model_config attribute of an .h5), or None."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                info = archive.getinfo("config.json")
                check_fits_in_memory(info.file_size, f"the config of {path}")
                return json.loads(archive.read(info))
        import h5py

        with h5py.File(path, "r") as h5:
            text = h5.attrs.get("model_config")
        if text is None:
            return None
        return json.loads(text.decode("utf-8") if isinstance(text, bytes) else str(text))
    except (KeyError, OSError, ValueError, zipfile.BadZipFile, RecursionError):
        return None  # the loaders report what is wrong with the file


def _layer_with_code(config, layer=None):
    """The name of the first layer whose config holds a serialized lambda: Keras 3's ``__lambda__``
    objects, tf_keras's ``function_type: lambda``."""
    if isinstance(config, dict):
        inner = config.get("config")
        if isinstance(inner, dict) and isinstance(inner.get("name"), str) and "class_name" in config:
            layer = inner["name"]
        if config.get("class_name") == "__lambda__" or config.get("function_type") == "lambda" \
                or config.get("output_shape_type") == "lambda":
            return layer or "?"
        values = config.values()
    elif isinstance(config, list):
        values = config
    else:
        return None
    return next((found for value in values if (found := _layer_with_code(value, layer)) is not None), None)


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
        try:
            return _signature_from_shapes(input_shapes)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"input_shapes={input_shapes!r} is not a shape ({first_line(exc)}); give one shape "
                                     "such as (None, 28, 28, 1), a list of them or a dict input name -> shape") from None
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


def _load_with_keras3(path, custom_objects, safe_mode):
    import keras

    return keras.models.load_model(path, custom_objects=custom_objects, compile=False, safe_mode=safe_mode)


def _load_with_tf_keras(path, custom_objects, safe_mode):
    import tf_keras

    return tf_keras.models.load_model(path, custom_objects=custom_objects, compile=False, safe_mode=safe_mode)
