"""Every kquant command of the README's "Coming from the seeds" table, run as written on a small Keras CNN."""

import re
import shlex
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import kquant
from kquant.cli import main

from .conftest import randomize_weights

README = Path(__file__).resolve().parents[1] / "README.md"


def table_rows() -> list[tuple[str, str]]:
    """(seed command, kquant command) of each row of the README table."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Coming from the seeds", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) == 2 and cells[1].startswith("`kquant"):
            rows.append((cells[0], re.fullmatch(r"`(.*)`", cells[1]).group(1)))
    return rows


def cnn():
    keras.utils.set_random_seed(0)
    image = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(4, 3, use_bias=False, name="conv1")(image)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(name="bn1")(x))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv2")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Dense(16, activation="relu", name="hidden")(keras.layers.Flatten()(x))
    model = keras.Model(image, keras.layers.Dense(10, activation="softmax", name="probs")(x))
    randomize_weights(model, 0)
    return model


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    model = cnn()
    model.save(tmp_path / "model.keras")
    rng = np.random.default_rng(0)
    x = rng.random((20, 16, 16, 3), np.float32)
    np.save(tmp_path / "calib.npy", x)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", rng.integers(0, 10, len(x)))
    (tmp_path / "images").mkdir()
    for i, image in enumerate((x * 255).astype(np.uint8)):
        (tmp_path / "images" / f"{i:02d}.png").write_bytes(tf.io.encode_png(image).numpy())
    monkeypatch.chdir(tmp_path)
    return tmp_path, model, x


CHECKS = {  # a distinctive part of the command -> what its outputs must show
    "summarize frozen.pb": lambda out, d: "image (Placeholder): [] shape=[?,16,16,3]" in out,
    "freeze model.keras": lambda out, d: [o.name for o in kquant.summarize_graph(d / "frozen.pb").outputs] == ["probs"],
    "kquant transform": lambda out, d: not {"Mul", "Rsqrt"} & set(kquant.summarize_graph(d / "opt.pb").op_counts),
    "opt2.pb": lambda out, d: not {"Mul", "Rsqrt"} & set(kquant.summarize_graph(d / "opt2.pb").op_counts),
    "--save-stages": lambda out, d: (d / "int8.pb").exists() and (d / "stages" / "min_max_log.txt").exists(),
    "--min-max-log": lambda out, d: "_QuantizedMatMul" in kquant.summarize_graph(d / "int8_from_log.pb").op_counts,
    "--exclude-node hidden": lambda out, d: sum(op.startswith("_QuantizedMatMul") * n for op, n in
                                                kquant.summarize_graph(d / "int8_cmd.pb").op_counts.items()) == 1,
    "GraphConverter": lambda out, d: (d / "int8_api.pb").exists() and (d / "int8_api_stages" / "fp32_optimized.pb").exists(),
    "kquant bench": lambda out, d: all(label in out for label in ("Number of batches", "Top-5 accuracy (%)", "Latency (ms/batch)")),
    "save_keras_model_to_pb": lambda out, d: (d / "models" / "test.pb").exists(),
}


def test_the_table_has_every_seed_tool():
    seeds = " ".join(seed for seed, _ in table_rows())
    for tool in ("summarize_graph", "freeze_graph", "transform_graph", "quantize_graph", "insert_logging",
                 "freeze_requantization_ranges", "fuse_quantized", "quantize_cmd.py", "GraphConverter", "launch_benchmark.py"):
        assert tool in seeds
    assert len(table_rows()) == len(CHECKS)


def test_every_kquant_command_of_the_table_runs(workdir, capfd):
    directory, model, x = workdir
    for seed, command in table_rows():
        check = next(f for key, f in CHECKS.items() if key in command)
        if command.startswith("kquant."):
            exec(command, {"kquant": kquant, "model": model, "x_calib": x})
        else:
            assert main(shlex.split(command)[1:] + ["--no-progress"] * ("quantize" in command or "bench" in command)) == 0, command
        out = capfd.readouterr().out
        assert check(out, directory), command
