"""Graph transforms: the C++ Graph Transform Tool's stock transforms and kquant's own, in one string syntax.

``apply_transforms(graph, ["fold_constants(ignore_errors=true)", "fold_keras_batch_norms"])`` runs on a
GraphDef or FrozenGraph; ``transform_graph(...)`` on files; ``optimize_for_inference(frozen)`` runs
kquant's list for Keras graphs.
"""

from kquant.transforms.apply import all_transform_names, apply_transforms, transform_graph
from kquant.transforms.context import TransformContext
from kquant.transforms.lists import optimize_for_inference_trans
from kquant.transforms.parse import TransformSpec, parse_transforms
from kquant.transforms.registry import python_transforms, register
from kquant.transforms.stock import STOCK_TRANSFORMS


def optimize_for_inference(frozen):
    """Run kquant's list for Keras graphs before int8 (``optimize_for_inference_trans``) on a FrozenGraph or GraphDef;
    a transform that fails is skipped with one warning (degrade, don't fail)."""
    return apply_transforms(frozen, optimize_for_inference_trans, skip_failing=True)


__all__ = [
    "STOCK_TRANSFORMS",
    "TransformContext",
    "TransformSpec",
    "all_transform_names",
    "apply_transforms",
    "optimize_for_inference",
    "optimize_for_inference_trans",
    "parse_transforms",
    "python_transforms",
    "register",
    "transform_graph",
]
