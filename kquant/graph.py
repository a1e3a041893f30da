"""GraphDef files read and written (binary and text, atomic), FrozenGraph and TensorSpec."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Iterator

from google.protobuf import message, text_format
from tensorflow.core.framework import graph_pb2

from kquant.errors import first_line, ModelFormatError, OutputWriteError
from kquant.graphdef import node_name

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
