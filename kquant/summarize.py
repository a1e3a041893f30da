"""summarize_graph: what TensorFlow's C++ summarize_graph tool printed, as a structured object."""

from __future__ import annotations

import collections
import dataclasses
import os

import numpy as np
from tensorflow.core.framework import graph_pb2, types_pb2
from tensorflow.python.framework import dtypes

from kquant.graph import FrozenGraph, load_graph_def
from kquant.graphdef import StaticShapes, is_control_input, likely_inputs, likely_outputs, placeholder_shape

VARIABLE_OPS = frozenset({"Variable", "VariableV2", "VarHandleOp"})


@dataclasses.dataclass(frozen=True)
class PossibleInput:
    name: str
    dtype: str
    dtype_enum: int
    shape: tuple | None

    def __str__(self) -> str:
        shape = "<unknown>" if self.shape is None else "[" + ",".join("?" if d is None else str(d) for d in self.shape) + "]"
        return f"(name={self.name}, type={self.dtype}({self.dtype_enum}), shape={shape})"


@dataclasses.dataclass(frozen=True)
class PossibleOutput:
    name: str
    op: str

    def __str__(self) -> str:
        return f"(name={self.name}, op={self.op})"


@dataclasses.dataclass(frozen=True)
class GraphSummary:
    """Inputs, outputs, op histogram and parameter counts of a GraphDef."""

    inputs: tuple[PossibleInput, ...]
    outputs: tuple[PossibleOutput, ...]
    op_counts: dict
    node_count: int
    const_parameters: int
    const_bytes: int
    variable_parameters: int
    control_edges: int
    graph_def: graph_pb2.GraphDef | None = dataclasses.field(default=None, repr=False, compare=False)

    def structure(self) -> str:
        """Every node, one a line, as the C++ tool's ``--print_structure`` lists them: ``name (op): [inputs]``,
        with the output shape TensorFlow infers (``?`` unknown) and a Const's dtype and shape."""
        if self.graph_def is None:
            raise ValueError("this summary was built without its graph; use kquant.summarize_graph(graph)")
        shapes = _output_shapes(self.graph_def)
        lines = []
        for node in self.graph_def.node:
            line = f"{node.name} ({node.op}): [{', '.join(node.input)}]"
            if node.name in shapes:
                line += f" shape={shapes[node.name]}"
            if node.op == "Const":
                line += f" dtype={dtype_display_name(node.attr['value'].tensor.dtype)}"
            lines.append(line)
        return "\n".join(lines)

    def __str__(self) -> str:
        lines = []
        if self.inputs:
            lines.append(f"Found {len(self.inputs)} possible inputs: " + " ".join(map(str, self.inputs)))
        else:
            lines.append("No inputs spotted.")
        if self.outputs:
            lines.append(f"Found {len(self.outputs)} possible outputs: " + " ".join(map(str, self.outputs)))
        else:
            lines.append("No outputs spotted.")
        lines.append(
            f"Found {self.const_parameters} ({_human(self.const_parameters)}) const parameters "
            f"({_human(self.const_bytes)}B), {self.variable_parameters} ({_human(self.variable_parameters)}) variable parameters, "
            f"and {self.control_edges} control_edges"
        )
        ops = sorted(self.op_counts.items(), key=lambda kv: (-kv[1], kv[0]))
        lines.append(f"Op types used ({self.node_count} nodes): " + ", ".join(f"{n} {op}" for op, n in ops))
        return "\n".join(lines)


def summarize_graph(path_or_graph) -> GraphSummary:
    """Summarize a GraphDef given as a .pb/.pbtxt path, a GraphDef or a FrozenGraph."""
    graph_def = _as_graph_def(path_or_graph)
    control_edges = sum(is_control_input(inp) for node in graph_def.node for inp in node.input)
    inputs = tuple(_possible_input(n) for n in likely_inputs(graph_def))
    outputs = tuple(PossibleOutput(n.name, n.op) for n in likely_outputs(graph_def))
    const_parameters = const_bytes = variable_parameters = 0
    for node in graph_def.node:
        if node.op == "Const":
            count, nbytes = _tensor_size(node.attr["value"].tensor)
            const_parameters += count
            const_bytes += nbytes
        elif node.op in VARIABLE_OPS:
            shape = node.attr["shape"].shape
            if not shape.unknown_rank:
                variable_parameters += int(np.prod([max(d.size, 0) for d in shape.dim]))
    return GraphSummary(
        inputs=inputs,
        outputs=outputs,
        op_counts=dict(collections.Counter(n.op for n in graph_def.node)),
        node_count=len(graph_def.node),
        const_parameters=const_parameters,
        const_bytes=const_bytes,
        variable_parameters=variable_parameters,
        control_edges=control_edges,
        graph_def=graph_def,
    )


def _output_shapes(graph_def) -> dict[str, str]:
    """Node name -> its first output's inferred shape (``[?,28,28,1]``); empty when the graph does not import."""
    import tensorflow as tf

    try:
        graph = StaticShapes(graph_def).graph
    except (ValueError, TypeError, tf.errors.OpError):
        return {}
    shapes = {}
    for op in graph.get_operations():
        if op.outputs:
            shape = op.outputs[0].shape
            shapes[op.name] = "<unknown>" if shape.rank is None else "[" + ",".join("?" if d is None else str(d) for d in shape.as_list()) + "]"
    return shapes


def dtype_display_name(enum: int) -> str:
    """The C++ tool's spelling: ``float``, ``double``, otherwise TensorFlow's dtype name."""
    if enum == types_pb2.DT_FLOAT:
        return "float"
    if enum == types_pb2.DT_DOUBLE:
        return "double"
    try:
        return dtypes.as_dtype(enum).name
    except TypeError:
        return f"type{enum}"


def _as_graph_def(path_or_graph) -> graph_pb2.GraphDef:
    if isinstance(path_or_graph, graph_pb2.GraphDef):
        return path_or_graph
    if isinstance(path_or_graph, FrozenGraph):
        return path_or_graph.graph_def
    if isinstance(path_or_graph, (str, os.PathLike)):
        return load_graph_def(path_or_graph)
    from kquant.arguments import invalid

    hint = "; freeze it first: summarize_graph(kquant.freeze(model))" if hasattr(path_or_graph, "layers") else ""
    raise invalid("path_or_graph", path_or_graph, f"a .pb/.pbtxt path, a GraphDef or a FrozenGraph{hint}")


def _possible_input(node) -> PossibleInput:
    enum = node.attr["dtype"].type
    return PossibleInput(node.name, dtype_display_name(enum), enum, placeholder_shape(node))


def _tensor_size(tensor) -> tuple[int, int]:
    """(element count, bytes) of a TensorProto without materializing it."""
    count = int(np.prod([d.size for d in tensor.tensor_shape.dim])) if tensor.tensor_shape.dim else 1
    try:
        itemsize = dtypes.as_dtype(tensor.dtype).size
    except TypeError:
        itemsize = 0
    if tensor.tensor_content:
        return count, len(tensor.tensor_content)
    return count, count * itemsize


def _human(n: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)
