"""Small models, files and helpers shared by the reliability tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

import kquant
from kquant.cli import main

INPUT_SHAPE = (8, 8, 2)


def build_small_cnn(keras, seed: int = 0):
    """x (8×8×2) -> Conv2D+ReLU -> MaxPool -> Flatten -> Dense(3): one unit of every int8 kind, quick to quantize."""
    keras.utils.set_random_seed(seed)
    layers = keras.layers
    return keras.Sequential([keras.Input(INPUT_SHAPE, name="x"), layers.Conv2D(4, 3, activation="relu"),
                             layers.MaxPooling2D(), layers.Flatten(), layers.Dense(3)])


def samples(count: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((count, *INPUT_SHAPE), dtype=np.float32)


@pytest.fixture(scope="session")
def small_cnn():
    import keras

    return build_small_cnn(keras)


@pytest.fixture(scope="session")
def small_frozen(small_cnn) -> kquant.FrozenGraph:
    return kquant.freeze(small_cnn)


@pytest.fixture(scope="session")
def small_files(small_frozen, tmp_path_factory) -> dict:
    """The small CNN as .pb and .pbtxt, and calibration samples as .npy: name -> path."""
    root = tmp_path_factory.mktemp("small")
    np.save(root / "calib.npy", samples())
    return {"pb": small_frozen.save(root / "small.pb"), "pbtxt": small_frozen.save(root / "small.pbtxt"),
            "calib": root / "calib.npy"}


def run_cli(argv, capfd) -> tuple[int, str, str]:
    """``kquant ARGV`` in process: (exit status, stdout, stderr)."""
    code = main([str(arg) for arg in argv])
    out, err = capfd.readouterr()
    return code, out, err


def assert_one_error_line(argv, capfd, *fragments) -> str:
    """``kquant ARGV`` exits 2 with nothing on stdout and one ``kquant: error:`` line holding every fragment."""
    code, out, err = run_cli(argv, capfd)
    assert (code, out) == (2, ""), err
    assert len(err.splitlines()) == 1 and err.startswith("kquant: error: "), err
    for fragment in fragments:
        assert fragment in err
    return err


def run_kquant(*args, env=None) -> subprocess.CompletedProcess:
    """The installed console script, as a user runs it (about 5 s: it imports TensorFlow)."""
    beside = Path(sys.executable).parent / "kquant"
    command = str(beside) if beside.exists() else shutil.which("kquant")
    return subprocess.run([command, *map(str, args)], capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture
def world_readable_dir():
    """A new directory under /tmp that user nobody can enter (pytest's tmp_path is private to root)."""
    root = Path(tempfile.mkdtemp(prefix="kquant-reliability-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root)


@contextlib.contextmanager
def unprivileged():
    """Run as user nobody while inside, so that directory permissions apply even when the tests run as root."""
    if os.geteuid() != 0:
        yield
        return
    try:
        os.setegid(65534)
        os.seteuid(65534)
    except OSError as exc:
        pytest.skip(f"cannot drop root privileges to test permissions ({exc})")
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


@contextlib.contextmanager
def within(seconds: int = 120):
    """Fail with TimeoutError if the block runs longer than ``seconds`` (SIGALRM interrupts blocking reads too):
    far above any case's run time, far below a hang."""
    def alarm(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
