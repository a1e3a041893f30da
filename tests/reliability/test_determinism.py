"""The same model and calibration data give a byte-identical int8 graph: twice in one process, and in two
processes with different hash seeds (set and dict order, node naming, deterministic serialization)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kquant
from tests.reliability.conftest import samples


@pytest.fixture(scope="module")
def bn_cnn_files(tmp_path_factory) -> dict:
    """A Keras 3 CNN with every conv kind and batch norms, frozen to .pb, and 32 calibration images as .npy."""
    import keras

    from tests.transforms.conftest import build_bn_cnn

    root = tmp_path_factory.mktemp("determinism")
    np.save(root / "calib.npy", np.random.default_rng(2).uniform(-1, 1, (32, 16, 16, 3)).astype(np.float32))
    return {"pb": kquant.freeze(build_bn_cnn(keras)).save(root / "bn_cnn.pb"), "calib": root / "calib.npy"}


def _bytes(qmodel) -> bytes:
    return qmodel.graph_def.SerializeToString(deterministic=True)


@pytest.mark.parametrize("method", ["minmax", "percentile", "kl"])
def test_two_runs_in_one_process_give_the_same_bytes(method, bn_cnn_files, small_frozen, tmp_path):
    for model, data in ((bn_cnn_files["pb"], np.load(bn_cnn_files["calib"])), (small_frozen, samples())):
        first = kquant.quantize(model, data, calibration=method, progress=False)
        second = kquant.quantize(model, data, calibration=method, progress=False)
        assert _bytes(first) == _bytes(second)
        assert first.save(tmp_path / "a.pb").read_bytes() == second.save(tmp_path / "b.pb").read_bytes()
        assert first.save(tmp_path / "a.pbtxt").read_bytes() == second.save(tmp_path / "b.pbtxt").read_bytes()


def test_two_processes_with_different_hash_seeds_write_the_same_file(bn_cnn_files, tmp_path):
    """``kquant quantize`` run twice at once, with PYTHONHASHSEED 1 and 2: identical output files."""
    kquant_command = Path(sys.executable).parent / "kquant"
    runs = []
    for seed in (1, 2):
        out = tmp_path / f"int8_{seed}.pb"
        command = [str(kquant_command), "quantize", str(bn_cnn_files["pb"]), "--calib", str(bn_cnn_files["calib"]),
                   "-o", str(out), "--calibration", "kl", "--no-progress"]
        env = {**os.environ, "PYTHONHASHSEED": str(seed)}
        runs.append((out, subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    for out, process in runs:
        stdout, stderr = process.communicate(timeout=180)
        assert process.returncode == 0, stderr
    digests = {hashlib.sha256(out.read_bytes()).hexdigest() for out, _ in runs}
    assert len(digests) == 1
    in_process = kquant.quantize(bn_cnn_files["pb"], np.load(bn_cnn_files["calib"]), calibration="kl", progress=False)
    assert in_process.save(tmp_path / "in_process.pb").read_bytes() == runs[0][0].read_bytes()
