"""The one gate every path kquant reads passes: regular files and directories only, readable, and small enough.

A FIFO would block the first read forever and a device (``/dev/zero``) would fill the memory, so both are
refused from ``os.stat`` alone, before anything opens them. Sizes are checked against the memory at hand
before a read allocates, and every OS-level failure of a read becomes a ``KQuantError`` naming the path.
"""

from __future__ import annotations

import contextlib
import os
import stat
import zipfile
from pathlib import Path

import numpy as np

from kquant.errors import DataError, KQuantError, ModelFormatError, ModelNotFoundError

_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"


def checked_path(path, *, role: str = "model", error: type[KQuantError] = ModelFormatError,
                 missing: type[KQuantError] = ModelNotFoundError, directory_ok: bool = True) -> Path:
    """``path`` as a Path if it is a readable regular file (or directory, when ``directory_ok``); otherwise
    ``missing`` (it does not exist) or ``error`` naming the path, what it is and what to pass instead."""
    path = Path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise missing(f"{path} does not exist; check the path") from None
    except PermissionError:
        raise error(f"cannot read {path} (Permission denied); check the permissions of the folders above it") from None
    except (OSError, ValueError) as exc:  # ELOOP, ENAMETOOLONG, a NUL byte in the name
        raise error(f"cannot read {path} ({getattr(exc, 'strerror', None) or exc}); check the path") from None
    if stat.S_ISDIR(info.st_mode):
        if not directory_ok:
            raise error(f"{path} is a directory; pass a {role} file")
        if not _accessible(path, os.R_OK | os.X_OK):
            raise error(f"cannot read {path} (Permission denied); check the directory's permissions")
        return path
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in _KINDS if test(info.st_mode)), "not a regular file")
        raise error(f"{path} is {kind}, not a regular file; kquant reads only files and directories: pass a {role} file")
    if not _accessible(path, os.R_OK):
        raise error(f"cannot read {path} (Permission denied); check the file's permissions")
    return path


def checked_tree(directory, *, role: str = "model", error: type[KQuantError] = ModelFormatError) -> Path:
    """``directory`` with every file in it through ``checked_path`` and their total size checked against memory:
    for formats TensorFlow reads itself (SavedModels), which would block on a FIFO inside."""
    directory = checked_path(directory, role=role, error=error)
    total = 0
    with reading(directory, error):
        for root, folders, names in os.walk(directory, onerror=_raise):
            for name in names + folders:
                entry = checked_path(Path(root) / name, role=role, error=error)
                total += entry.stat().st_size if entry.is_file() else 0
    check_fits_in_memory(total, str(directory), error)
    return directory


def _raise(exc: OSError):
    raise exc


def read_bytes(path, *, role: str = "model", error: type[KQuantError] = ModelFormatError,
               missing: type[KQuantError] = ModelNotFoundError) -> bytes:
    """The bytes of a regular file that fits in memory; every failure is ``error`` (``missing``) naming ``path``."""
    path = checked_path(path, role=role, error=error, missing=missing, directory_ok=False)
    check_fits_in_memory(path.stat().st_size, f"{path}", error)
    with reading(path, error):
        return path.read_bytes()


@contextlib.contextmanager
def reading(path, error: type[KQuantError] = ModelFormatError):
    """Turn what reading or parsing a file can raise besides a KQuantError (too deep, too big, unreadable) into
    ``error`` naming ``path``."""
    try:
        yield
    except RecursionError:
        raise error(f"{path} is nested too deeply to parse; it is not a model kquant can read") from None
    except MemoryError:
        raise error(f"{path} does not fit in the memory at hand; free memory or use a smaller file") from None
    except PermissionError:
        raise error(f"cannot read {path} (Permission denied); check the file's permissions") from None
    except OSError as exc:
        raise error(f"cannot read {path} ({exc.strerror or exc}); check the file and the disk") from None


def available_memory() -> int | None:
    """Bytes this process can still allocate: MemAvailable, or the cgroup's limit when lower (None if unknown)."""
    limits = []
    with contextlib.suppress(OSError, ValueError, StopIteration):
        text = Path("/proc/meminfo").read_text()
        limits.append(int(next(line for line in text.splitlines() if line.startswith("MemAvailable:")).split()[1]) * 1024)
    with contextlib.suppress(OSError, ValueError):
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            limits.append(int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text()))
    return max(min(limits), 0) if limits else None


def check_fits_in_memory(size: int, what: str, error: type[KQuantError] = ModelFormatError) -> None:
    available = available_memory()
    if available is not None and size > available:
        raise error(f"{what} needs {_gib(size)} but only {_gib(available)} of memory is available; "
                    "free memory or pass a smaller file")


def checked_data_path(path, *, role: str = "calibration data", error: type[KQuantError] = DataError,
                      directory_ok: bool = True) -> Path:
    """``checked_path`` for data files: every problem, a missing path too, is ``error`` naming the ``role``."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        raise error(f"cannot read {role} {path} (it does not exist); check the path") from None
    except (OSError, ValueError):
        pass  # checked_path names the problem
    return checked_path(path, role=role, error=error, directory_ok=directory_ok)


def load_arrays(path, *, role: str = "calibration data", error: type[KQuantError] = DataError):
    """A .npy file as an array, or a .npz as a dict name -> array (a single unnamed ``arr_0`` -> that array).

    Each array's header is read first: object (pickled) arrays are refused and the size it claims is checked
    against the memory at hand before numpy allocates it. A damaged file or member is ``error`` naming it.
    """
    path = checked_data_path(path, role=role, error=error, directory_ok=False)
    hint = "pass a .npy or .npz file of numeric arrays (np.save / np.savez)"
    with reading(path, error), open(path, "rb") as file:
        magic = file.read(len(_NPY_MAGIC))
        file.seek(0)
        if magic.startswith(_NPY_MAGIC):
            return _read_npy(file, f"{role} {path}", error, hint)
        if magic.startswith(_ZIP_MAGIC):
            arrays = _read_npz(file, f"{role} {path}", error, hint)
            return next(iter(arrays.values())) if list(arrays) == ["arr_0"] else arrays
    raise error(f"cannot read {role} {path} (not a .npy or .npz file); {hint}")


def _read_npz(file, what: str, error, hint: str) -> dict:
    try:
        archive = zipfile.ZipFile(file)
        members = [m for m in archive.infolist() if m.filename.endswith(".npy")]
    except (zipfile.BadZipFile, ValueError, EOFError) as exc:
        raise error(f"cannot read {what} (a damaged .npz archive: {exc}); {hint}") from None
    if not members:
        raise error(f"cannot read {what} (the .npz archive holds no arrays); {hint}")
    arrays = {}
    with archive:
        for member in members:
            key = member.filename[: -len(".npy")]
            try:
                with archive.open(member) as stream:
                    arrays[key] = _read_npy(stream, f"{what}, array '{key}',", error, hint)
            except (zipfile.BadZipFile, EOFError) as exc:
                raise error(f"cannot read {what}, array '{key}' (damaged: {exc}); {hint}") from None
    return arrays


def _read_npy(stream, what: str, error, hint: str) -> np.ndarray:
    try:
        version = np.lib.format.read_magic(stream)
        shape, fortran_order, dtype = (np.lib.format.read_array_header_1_0(stream) if version == (1, 0)
                                       else np.lib.format.read_array_header_2_0(stream))
    except (ValueError, EOFError, SyntaxError, TypeError) as exc:
        raise error(f"cannot read {what} (a damaged .npy header: {str(exc)[:200]}); {hint}") from None
    if dtype.hasobject:
        raise error(f"cannot read {what} (it holds Python objects, which kquant does not unpickle); {hint}")
    size = int(np.prod(shape, dtype=object)) * dtype.itemsize
    check_fits_in_memory(size, f"{what} of shape {shape}", error)
    buffer = bytearray(size)
    view, filled = memoryview(buffer), 0
    while filled < size:
        count = stream.readinto(view[filled:])
        if not count:
            raise error(f"cannot read {what} (truncated: its header promises {size} bytes of data); {hint}")
        filled += count
    return np.frombuffer(buffer, dtype=dtype).reshape(shape, order="F" if fortran_order else "C")


def _accessible(path: Path, mode: int) -> bool:
    try:
        return os.access(path, mode, effective_ids=os.access in os.supports_effective_ids)
    except OSError:
        return False


def _gib(size: int) -> str:
    return f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"
