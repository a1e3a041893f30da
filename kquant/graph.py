"""GraphDef read and write (binary and text, atomic), tensor naming, and FrozenGraph."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
from google.protobuf import message, text_format
from tensorflow.core.framework import graph_pb2, node_def_pb2
from tensorflow.python.framework import tensor_util

from kquant.errors import first_line, ModelFormatError, NodeNotFoundError, OutputWriteError

TEXT_SUFFIXES = (".pbtxt", ".txt", ".prototxt")
GRAPH_SUFFIXES = (".pb",) + TEXT_SUFFIXES
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: tensor name (``node:0``), dtype name and shape (None = unknown dim)."""

    name: str
    dtype: str
    shape: tuple | None

    @property
    def node(self) -> str:
        return node_name(self.name)


@dataclasses.dataclass
class FrozenGraph:
    """A GraphDef with every variable folded to a constant, and its known inputs and outputs."""

    graph_def: graph_pb2.GraphDef
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def save(self, path: str | os.PathLike) -> Path:
        """Write the GraphDef to ``path`` (.pb binary, .pbtxt text), atomically."""
        return save_graph_def(self.graph_def, path)


def node_name(tensor: str) -> str:
    """``'^a'``, ``'a:1'`` or ``'a'`` -> ``'a'``."""
    tensor = tensor.lstrip("^")
    head, sep, tail = tensor.rpartition(":")
    return head if sep and tail.isdigit() else tensor


def tensor_name(name: str) -> str:
    """``'a'`` -> ``'a:0'``; names that already carry an output index are kept."""
    head, sep, tail = name.rpartition(":")
    return name if sep and tail.isdigit() else f"{name}:0"


def output_index(tensor: str) -> int:
    head, sep, tail = tensor.rpartition(":")
    return int(tail) if sep and tail.isdigit() else 0


def is_control_input(name: str) -> bool:
    return name.startswith("^")


def parse_graph_def(data: bytes, *, text: bool, source: str = "graph") -> graph_pb2.GraphDef:
    """Parse serialized GraphDef bytes; a parse failure is a ModelFormatError naming ``source``."""
    graph_def = graph_pb2.GraphDef()
    try:
        if text:
            text_format.Merge(data.decode("utf-8"), graph_def)
        else:
            graph_def.ParseFromString(data)
    except (message.DecodeError, text_format.ParseError, UnicodeDecodeError, RuntimeWarning) as exc:
        kind = "text (pbtxt)" if text else "binary"
        raise ModelFormatError(
            f"{source} is not a valid {kind} GraphDef ({first_line(exc)}); "
            "check the file is complete and not corrupt, and that the suffix matches its format (.pb binary, .pbtxt text)"
        ) from exc
    return graph_def


def load_graph_def(path: str | os.PathLike) -> graph_pb2.GraphDef:
    """Read a GraphDef from a .pb (binary) or .pbtxt (text) file."""
    from kquant.files import checked_path, read_bytes, reading

    path = checked_path(path)
    if path.is_dir():
        raise ModelFormatError(f"{path} is a directory, not a GraphDef file; pass the .pb/.pbtxt file inside it")
    if path.name in SAVED_MODEL_FILES:
        raise ModelFormatError(f"{path} is the graph file of a SavedModel, not a GraphDef; pass the folder {path.parent}")
    data = read_bytes(path)
    if not data:
        raise ModelFormatError(f"{path} is empty; re-export the model")
    text = path.suffix.lower() in TEXT_SUFFIXES
    with reading(path):
        graph_def = parse_graph_def(data, text=text, source=str(path))
    if not graph_def.node:
        raise ModelFormatError(f"{path} parsed as a GraphDef with no nodes; it is not a TensorFlow graph")
    return graph_def


def serialize_graph_def(graph_def: graph_pb2.GraphDef, *, text: bool) -> bytes:
    if text:
        return text_format.MessageToString(graph_def).encode("utf-8")
    return graph_def.SerializeToString(deterministic=True)


def save_graph_def(graph_def: graph_pb2.GraphDef, path: str | os.PathLike) -> Path:
    """Write ``graph_def`` to ``path`` atomically: text for .pbtxt, binary otherwise."""
    path = Path(path)
    if path.suffix.lower() not in GRAPH_SUFFIXES:
        raise OutputWriteError(f"{path} does not name a GraphDef file: kquant writes GraphDefs as .pb (binary) or "
                               ".pbtxt (text); name the output so")
    data = serialize_graph_def(graph_def, text=path.suffix.lower() in TEXT_SUFFIXES)
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)
    return path


def without_default_attrs(graph_def: graph_pb2.GraphDef) -> graph_pb2.GraphDef:
    """A copy of ``graph_def`` without the attributes left at their op's default, as SavedModels are written;
    TensorFlow adds them back when it imports the graph."""
    from tensorflow.core.protobuf import meta_graph_pb2
    from tensorflow.python.framework import meta_graph

    holder = meta_graph_pb2.MetaGraphDef()
    holder.graph_def.CopyFrom(graph_def)
    meta_graph.strip_graph_default_valued_attrs(holder)
    return holder.graph_def


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on failure it is removed.

    An existing file at ``path`` survives any failure untouched.
    """
    path = Path(path)
    parent = path.parent
    created = make_parents(parent)
    if path.is_dir():
        raise OutputWriteError(f"{path} is a directory; give a file name for the output")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        remove_created(created)
        raise OutputWriteError(f"cannot write in {parent} ({exc.strerror}); choose a writable output directory") from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        tmp.chmod(0o666 & ~_umask())  # mkstemp makes the file private; the output gets the mode a new file would have
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        remove_created(created)
        if isinstance(exc, OSError):
            raise OutputWriteError(f"writing {path} failed ({exc.strerror or exc}); any earlier file there is unchanged: "
                                   "free disk space or choose a writable path") from exc
        raise


def make_parents(directory: Path) -> list[Path]:
    """Create ``directory`` and any missing parents; returns the ones created, deepest first, for ``remove_created``."""
    missing: list[Path] = []
    try:
        missing = [d for d in (directory, *directory.parents) if not d.exists()]
        if missing:
            directory.mkdir(parents=True)
    except OSError as exc:
        remove_created(missing)
        raise OutputWriteError(f"cannot create directory {directory} ({exc.strerror}); choose a writable output path") from exc
    return missing


def remove_created(directories) -> None:
    """Remove the folders a failed write created (deepest first), leaving any that are not empty."""
    for directory in directories:
        try:
            directory.rmdir()
        except OSError:
            return


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_output_is_not_input(output: str | os.PathLike, *inputs) -> None:
    """Raise OutputWriteError if writing ``output`` would replace one of ``inputs`` (a path, or a file inside a directory)."""
    target = Path(output).resolve()
    for source in inputs:
        if not isinstance(source, (str, os.PathLike)):
            continue
        source = Path(source).resolve()
        try:
            same = target == source or (target.exists() and source.exists() and target.samefile(source))
            inside = source.is_dir() and source in target.parents
        except OSError:  # a path that cannot be looked at: the file gate names it when it is read
            continue
        if same:
            raise OutputWriteError(f"the output {output} is the input {source}; write to another path (kquant never "
                                   "modifies its input)")
        if inside:
            raise OutputWriteError(f"the output {output} is inside the input directory {source}; write elsewhere "
                                   "(kquant never modifies its input)")


def const_node(name: str, value, dtype=None) -> node_def_pb2.NodeDef:
    """A Const node holding ``value`` (numpy array or scalar), optionally as ``dtype``."""
    array = np.asarray(value)
    proto = tensor_util.make_tensor_proto(array, dtype=dtype, shape=array.shape)
    node = node_def_pb2.NodeDef(name=name, op="Const")
    node.attr["dtype"].type = proto.dtype
    node.attr["value"].tensor.CopyFrom(proto)
    return node


def nodes_by_name(graph_def: graph_pb2.GraphDef) -> dict:
    return {node.name: node for node in graph_def.node}


def consumers(graph_def: graph_pb2.GraphDef) -> dict[str, list]:
    """Map node name -> the nodes that read any of its outputs (data edges only)."""
    result: dict[str, list] = {node.name: [] for node in graph_def.node}
    for node in graph_def.node:
        for inp in node.input:
            if not is_control_input(inp):
                result.setdefault(node_name(inp), []).append(node)
    return result


def ancestors(nodes: dict, names) -> set[str]:
    """The nodes named in ``names`` (nodes or tensors) and every node they depend on, through data and control
    inputs; ``nodes``: name -> NodeDef."""
    seen, pending = set(), [node_name(n) for n in names]
    while pending:
        name = pending.pop()
        if name in seen or name not in nodes:
            continue
        seen.add(name)
        pending.extend(node_name(inp) for inp in nodes[name].input)
    return seen


def extract_sub_graph(graph_def: graph_pb2.GraphDef, node_names) -> graph_pb2.GraphDef:
    """The nodes that ``node_names`` need (through data and control inputs), in graph order, with library and versions."""
    keep = ancestors(nodes_by_name(graph_def), node_names)
    pruned = graph_pb2.GraphDef()
    pruned.versions.CopyFrom(graph_def.versions)
    pruned.library.CopyFrom(graph_def.library)
    pruned.node.extend(node for node in graph_def.node if node.name in keep)
    return pruned


def check_nodes_exist(graph_def: graph_pb2.GraphDef, names, role: str) -> None:
    """Raise NodeNotFoundError if any tensor or node in ``names`` is missing from the graph."""
    known = {node.name for node in graph_def.node}
    missing = [node_name(name) for name in names if node_name(name) not in known]
    if missing:
        from kquant.summarize import summarize_graph

        summary = summarize_graph(graph_def)
        hint = [i.name for i in summary.inputs] if role == "input" else [o.name for o in summary.outputs]
        raise NodeNotFoundError(
            f"unknown {role} node(s) {', '.join(missing)}; the graph's likely {role}s are "
            f"{', '.join(hint) or '(none found)'} (run `kquant summarize MODEL` to list them)"
        )
