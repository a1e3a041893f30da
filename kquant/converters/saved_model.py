"""SavedModel directories -> FrozenGraph, one signature at a time."""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from kquant.converters.function import freeze_concrete_function
from kquant.errors import first_line, ModelFormatError, SignatureNotFoundError
from kquant.files import checked_tree

DEFAULT_SIGNATURE = "serving_default"


def is_saved_model_dir(path: Path) -> bool:
    return path.is_dir() and ((path / "saved_model.pb").exists() or (path / "saved_model.pbtxt").exists())


def freeze_saved_model(path, signature: str | None = None):
    """Freeze the signature ``signature`` (default ``serving_default``) of the SavedModel at ``path``."""
    path = Path(path)
    if not is_saved_model_dir(path):
        raise ModelFormatError(
            f"{path} is a directory but not a SavedModel (no saved_model.pb inside); "
            "pass a SavedModel directory, a .keras/.h5 file or a .pb graph"
        )
    checked_tree(path)
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:  # TF raises several types for a damaged SavedModel
        raise ModelFormatError(f"{path} could not be loaded as a SavedModel ({first_line(exc)}); re-export it") from exc
    name = signature or DEFAULT_SIGNATURE
    available = sorted(loaded.signatures.keys())
    if name not in available:
        raise SignatureNotFoundError(
            f"{path} has no signature '{name}'; it has {', '.join(available) or 'no signatures'} "
            "(choose one with signature=... / --signature, or re-export the model with a serving signature)"
        )
    function = loaded.signatures[name]
    return freeze_concrete_function(function, output_names=sorted(function.structured_outputs))
