"""fold_tensordot_matmuls: Dense layers on sequences and EinsumDense projections run as MatMul -> bias -> activation chains; one name for the tensordot transforms.

Runs ``fold_tensordot_matmuls_trans`` (kquant/transforms/lists.py) in order, as kquant's list does:
rewrite_einsum_dense_as_matmuls, fold_tensordot_shapes, remove_redundant_reshapes, sink_tensordot_reshapes,
remove_redundant_reshapes. Warnings name the transform of the list that wrote them.
"""

from __future__ import annotations

import dataclasses

from kquant.transforms.lists import fold_tensordot_matmuls_trans
from kquant.transforms.parse import TransformSpec
from kquant.transforms.registry import python_transforms, register


@register("fold_tensordot_matmuls")
def fold_tensordot_matmuls(graph_def, context):
    transforms = python_transforms()
    for name in fold_tensordot_matmuls_trans:
        graph_def = transforms[name](graph_def, dataclasses.replace(context, spec=TransformSpec(name)))
    return graph_def
