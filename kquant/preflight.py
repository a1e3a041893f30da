"""Run a graph once in a child process before kquant runs it in-process, so that a TensorFlow abort raises an error.

TensorFlow stops the whole process on a failed internal CHECK (a shape function or a grappler pass meeting a
form it does not expect), which no ``try`` can catch: the user's notebook or server would die without a
message. kquant's own transforms keep the forms known to abort out of its graphs; this guards against the
next unknown one. The child imports the graph into a session configured like kquant's (``runtime.GraphRunner``)
and fetches the same tensors on one batch; if a signal kills it, the parent raises ``GraphRunError``. Any
ordinary failure in the child is left to the in-process run, which reports it the usual way.

One child serves a whole process (started at the first pre-flight, again after an abort), so the TensorFlow
start-up is paid once; each graph then costs its import and one batch (measured in the README). After a graph
of more than 256 MiB the child ends, so it does not hold that memory beside the rest of the work.
KQUANT_PREFLIGHT=0 turns it off.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from kquant.errors import GraphRunError


# after a graph this big the child ends: it keeps much of what the graph took (TensorFlow's caches), and a new
# child's start-up is small against the quantize time of such a model
KEEP_CHILD_BELOW = 256 * 2 ** 20


def preflight_enabled() -> bool:
    return os.environ.get("KQUANT_PREFLIGHT", "1").strip().lower() not in ("0", "false", "no", "off")


def preflight(graph_def, inputs, outputs, arrays, what: str = "the graph", *, optimize: bool = True) -> None:
    """Run ``graph_def`` on ``arrays`` (in ``inputs`` order) fetching ``outputs`` in a child process; raise
    ``GraphRunError`` if TensorFlow kills it. ``what`` names the graph in the message; ``optimize``: whether the
    in-process run uses grappler (``runtime.GraphRunner``), so the child runs it the same way."""
    if not preflight_enabled():
        return
    with tempfile.TemporaryDirectory(prefix="kquant-preflight-") as tmp:
        tmp = Path(tmp)
        try:
            size = (tmp / "graph.pb").write_bytes(graph_def.SerializeToString())
            np.savez(tmp / "inputs.npz", *[np.asarray(a) for a in arrays])
            (tmp / "names.json").write_text(json.dumps({"inputs": list(inputs), "outputs": list(outputs), "optimize": optimize}))
        except OSError:  # no room for the child's copy (a full /tmp): run without the pre-flight, as before it
            return
        returncode, stderr = _Child.run(tmp)
    if size > KEEP_CHILD_BELOW:
        _Child.close()
    if returncode is None or returncode >= 0:
        return
    raise GraphRunError(
        f"TensorFlow aborted the process running {what} ({_signal_name(-returncode)}: {_abort_line(stderr)}); "
        "kquant ran it in a child process first, so this process lives on. The graph holds a form TensorFlow cannot "
        "run: please report it with the model; excluding the named op from quantization or another transform list may avoid it"
    )


class _Child:
    """The one child process of this process: reads a folder per line on stdin, answers a line when it ran it."""

    process: subprocess.Popen | None = None
    log = None  # its stderr, a file: a pipe nobody reads would fill and stop it

    @classmethod
    def run(cls, folder: Path) -> tuple[int | None, str]:
        """(None, "") when the child ran the graph in ``folder`` (or failed it without dying), else (its exit status, its stderr)."""
        if cls.process is None or cls.process.poll() is not None:
            cls.log = tempfile.TemporaryFile("w+")
            cls.process = subprocess.Popen([sys.executable, "-m", "kquant.preflight"], stdin=subprocess.PIPE,
                                           stdout=subprocess.PIPE, stderr=cls.log, text=True,
                                           env={**os.environ, "KQUANT_TF_LOGS": "1"})
        process = cls.process
        try:
            process.stdin.write(f"{folder}\n")
            process.stdin.flush()
            answer = process.stdout.readline()
        except BrokenPipeError:
            answer = ""
        if answer:
            return None, ""
        cls.process = None
        process.wait()
        cls.log.seek(0)
        return process.returncode, cls.log.read()

    @classmethod
    def close(cls) -> None:
        if cls.process is not None and cls.process.poll() is None:
            cls.process.stdin.close()
            cls.process.wait()
        cls.process = None


atexit.register(_Child.close)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _abort_line(stderr: str) -> str:
    """TensorFlow's own reason: the 'Check failed' line, else the last line of its log."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    reason = next((line for line in lines if "Check failed" in line), None)
    if reason is None:
        reason = next((line for line in reversed(lines) if not line.startswith("@")), "no message")
    return reason.split("] ", 1)[-1][:300]


def _serve() -> None:
    """The child: run each folder named on stdin, answer on stdout; an ordinary error is the in-process run's to report."""
    from kquant import _startup  # noqa: F401  (sets TensorFlow up as the parent has it)
    from kquant.graph import load_graph_def
    from kquant.runtime import GraphRunner

    for line in sys.stdin:
        folder = Path(line.strip())
        try:
            names = json.loads((folder / "names.json").read_text())
            with np.load(folder / "inputs.npz") as data:
                arrays = [data[f"arr_{i}"] for i in range(len(data.files))]
            with GraphRunner(load_graph_def(folder / "graph.pb"), names["inputs"], names["outputs"],
                             optimize=names["optimize"]) as run:
                run(*arrays)
        except Exception:  # the in-process run reports it
            pass
        _release_freed_memory()
        print("done", flush=True)


def _release_freed_memory() -> None:
    """Hand the graph's freed buffers back to the system: the child waits beside the parent for the rest of its
    work, and glibc's malloc would otherwise keep a big model's worth of freed memory."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


if __name__ == "__main__":
    _serve()
