"""Run a graph once in a child process before kquant runs it in-process, so that a TensorFlow abort raises an error.

TensorFlow stops the whole process on a failed internal CHECK (a shape function or a grappler pass meeting a
form it does not expect), which no ``try`` can catch: the user's notebook or server would die without a
message. kquant's own transforms keep the forms known to abort out of its graphs; this guards against the
next unknown one. The child imports the graph into a session configured like kquant's (``runtime.GraphRunner``)
and fetches the same tensors on one batch; if a signal kills it, the parent raises ``GraphRunError``. Any
ordinary failure in the child is left to the in-process run, which reports it the usual way.

It costs a TensorFlow start-up and one batch (measured in the README); KQUANT_PREFLIGHT=0 turns it off.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from kquant.errors import GraphRunError


def preflight_enabled() -> bool:
    return os.environ.get("KQUANT_PREFLIGHT", "1").strip().lower() not in ("0", "false", "no", "off")


def preflight(graph_def, inputs, outputs, arrays, what: str = "the graph") -> None:
    """Run ``graph_def`` on ``arrays`` (in ``inputs`` order) fetching ``outputs`` in a child process; raise
    ``GraphRunError`` if TensorFlow kills it. ``what`` names the graph in the message."""
    if not preflight_enabled():
        return
    with tempfile.TemporaryDirectory(prefix="kquant-preflight-") as tmp:
        tmp = Path(tmp)
        (tmp / "graph.pb").write_bytes(graph_def.SerializeToString())
        np.savez(tmp / "inputs.npz", *[np.asarray(a) for a in arrays])
        (tmp / "names.json").write_text(json.dumps({"inputs": list(inputs), "outputs": list(outputs)}))
        child = subprocess.run([sys.executable, "-m", "kquant.preflight", str(tmp)], capture_output=True, text=True,
                               env={**os.environ, "KQUANT_TF_LOGS": "1"})
    if child.returncode >= 0:
        return
    raise GraphRunError(
        f"TensorFlow aborted the process running {what} ({_signal_name(-child.returncode)}: {_abort_line(child.stderr)}); "
        "kquant ran it in a child process first, so this process lives on. The graph holds a form TensorFlow cannot "
        "run: please report it with the model; excluding the named op from quantization or another transform list may avoid it"
    )


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


def _run_child(folder: str) -> None:
    import kquant  # noqa: F401  (sets TensorFlow up as the parent has it)
    from kquant.graph import load_graph_def
    from kquant.runtime import GraphRunner

    folder = Path(folder)
    names = json.loads((folder / "names.json").read_text())
    with np.load(folder / "inputs.npz") as data:
        arrays = [data[f"arr_{i}"] for i in range(len(data.files))]
    with GraphRunner(load_graph_def(folder / "graph.pb"), names["inputs"], names["outputs"]) as run:
        run(*arrays)


if __name__ == "__main__":
    _run_child(sys.argv[1])
