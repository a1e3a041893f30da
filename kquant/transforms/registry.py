"""The Python transforms, by the name transform strings use: one module in ``kquant/transforms/rewrites/`` per transform."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Callable

from tensorflow.core.framework import graph_pb2

from kquant.transforms.context import TransformContext

Transform = Callable[[graph_pb2.GraphDef, TransformContext], graph_pb2.GraphDef]

PYTHON_TRANSFORMS: dict[str, Transform] = {}
PYTHON_PARAMETERS: dict[str, dict[str, str]] = {}


def register(name: str, params: dict[str, str] | None = None):
    """Decorator: make ``fn(graph_def, context) -> graph_def`` callable as ``name`` in transform strings.

    ``params``: the arguments it reads, name -> kind ("bool", "int", "float", "string", "dtype", "shape"); any
    other argument is refused before it runs (ignore_errors is always accepted).
    """

    def add(fn: Transform) -> Transform:
        if name in PYTHON_TRANSFORMS:
            raise ValueError(f"transform {name} is registered twice")
        PYTHON_TRANSFORMS[name] = fn
        PYTHON_PARAMETERS[name] = dict(params or {})
        return fn

    return add


def python_transforms() -> dict[str, Transform]:
    """Every Python transform, importing the rewrite modules on first use."""
    from kquant.transforms import rewrites

    for module in pkgutil.iter_modules(rewrites.__path__):
        importlib.import_module(f"{rewrites.__name__}.{module.name}")
    return PYTHON_TRANSFORMS


def declared_parameters(name: str) -> dict[str, str]:
    """The arguments transform ``name`` accepts (name -> kind), ignore_errors included."""
    from kquant.transforms.stock import STOCK_PARAMETERS

    python_transforms()
    return {"ignore_errors": "bool", **STOCK_PARAMETERS.get(name, {}), **PYTHON_PARAMETERS.get(name, {})}
