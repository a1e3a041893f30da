"""Writing a command's outputs all or nothing: each written atomically, and all removed again (a replaced file
put back) when a later one fails."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from kquant.errors import OutputWriteError
from kquant.graph import atomic_write


def check_new_directory(path, flag) -> None:
    """A directory output (``flag`` names it in the error) may not exist yet or must be empty."""
    if path and Path(path).exists() and (not Path(path).is_dir() or any(Path(path).iterdir())):
        raise OutputWriteError(f"{flag} {path} exists and is not an empty directory; choose a new directory")


def write_text(path, text) -> None:
    """``text`` to ``path`` as UTF-8, atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


class AllOrNothing:
    """The outputs of one command, all or nothing: each written atomically by its writer; if a later one fails,
    those written before are removed again and a file one replaced is put back."""

    def __enter__(self):
        self._written = []  # (path, backup of the file it replaced or None, whether it existed before)
        return self

    def write(self, path, writer) -> None:
        path = Path(path)
        backup = None
        if path.is_file():
            try:
                handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".bak", dir=path.parent)
                os.close(handle)
                backup = Path(name)
                shutil.copy2(path, backup)
            except OSError:  # an unwritable directory: the writer fails too, and leaves the file as it is
                if backup is not None:
                    backup.unlink(missing_ok=True)
                backup = None
        existed = path.exists()  # an existing directory is an empty one (check_new_directory)
        try:
            writer(path)
        except BaseException:
            if backup is not None:  # the writers are atomic: the file is still the old one
                backup.unlink(missing_ok=True)
            raise
        self._written.append((path, backup, existed))

    def __exit__(self, kind, exc, traceback):
        for path, backup, existed in reversed(self._written):
            if kind is None:
                if backup is not None:
                    backup.unlink(missing_ok=True)
            elif backup is not None:
                os.replace(backup, path)
            elif path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
                if existed:
                    path.mkdir()
            elif not existed:
                path.unlink(missing_ok=True)
        return False
