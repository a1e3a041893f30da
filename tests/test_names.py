"""Names resolve or fail loudly: exclusions by node or Keras layer name, the closest names on a typo, one layer name
for a unit in the summary, the stem and the report, the graph's structure, and stable Sequential input names."""

import subprocess
import sys

import keras
import numpy as np
import pytest

import kquant
from kquant.cli import main
from kquant.errors import ConfigurationError


@pytest.fixture(scope="module")
def cnn():
    keras.utils.set_random_seed(0)
    image = keras.Input((12, 12, 1), name="image")
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv1")(image)
    x = keras.layers.Conv2D(6, 3, use_bias=False, name="conv2")(x)
    x = keras.layers.ReLU(name="relu2")(keras.layers.BatchNormalization(name="bn2")(x))
    probs = keras.layers.Dense(3, activation="softmax", name="probs")(keras.layers.Flatten(name="flatten")(x))
    return keras.Model(image, probs)


@pytest.fixture(scope="module")
def calib():
    return np.random.default_rng(0).random((8, 12, 12, 1), np.float32)


def int8_convs(qmodel) -> int:
    return sum(node.op.startswith("_FusedQuantizedConv") or node.op.startswith("_QuantizedConv")
               for node in qmodel.graph_def.node)


def test_a_keras_layer_name_excludes_that_layer(cnn, calib):
    base = kquant.quantize(cnn, calib, progress=False)
    excluded = kquant.quantize(cnn, calib, excluded_nodes=["conv2"], progress=False)
    assert int8_convs(base) == 1  # conv1 is the image stem, fp32
    assert int8_convs(excluded) == 0


@pytest.mark.parametrize("kwargs, closest", [
    ({"excluded_nodes": ["conv3"]}, "conv1"),
    ({"excluded_nodes": ["no/such/node"]}, "no node or Keras layer"),
    ({"excluded_ops": ["Conv2d"]}, "did you mean Conv2D"),
])
def test_an_exclusion_that_matches_nothing_is_refused(cnn, calib, kwargs, closest):
    with pytest.raises(ConfigurationError, match=closest):
        kquant.quantize(cnn, calib, progress=False, **kwargs)


def test_cli_exclude_node_typo_is_one_error_line(cnn, calib, tmp_path, capfd):
    cnn.save(tmp_path / "m.keras")
    np.save(tmp_path / "calib.npy", calib)
    code = main(["quantize", str(tmp_path / "m.keras"), "--calib", str(tmp_path / "calib.npy"), "-o",
                 str(tmp_path / "q.pb"), "--exclude-node", "conv22", "--no-progress"])
    err = capfd.readouterr().err
    assert code == 2 and "conv2" in err and err.startswith("kquant: error:") and not (tmp_path / "q.pb").exists()


def test_summary_stem_and_report_name_a_unit_by_its_layer(cnn, calib):
    qmodel = kquant.quantize(cnn, calib, progress=False)
    assert qmodel.stem_layers() == ["conv1"]
    assert "fp32 image stem: conv1" in qmodel.summary()
    layers = {row.layer: row.fell_back for row in qmodel.report().rows}
    assert layers == {"conv1": True, "conv2": False, "flatten": False, "probs": False}


def test_structure_lists_every_node_with_op_inputs_and_shape(cnn, tmp_path, capfd):
    frozen = kquant.freeze(cnn)
    lines = kquant.summarize_graph(frozen).structure().splitlines()
    assert len(lines) == len(frozen.graph_def.node)
    assert "image (Placeholder): [] shape=[?,12,12,1]" in lines
    conv = next(line for line in lines if "(Conv2D)" in line and "conv2" in line)
    assert conv.endswith("shape=[?,8,8,6]") and "conv1" in conv
    frozen.save(tmp_path / "m.pb")
    assert main(["summarize", str(tmp_path / "m.pb"), "--print-structure"]) == 0
    out = capfd.readouterr().out.splitlines()
    assert out[:len(lines)] == lines and out[len(lines)].startswith("Found 1 possible inputs")


SEQUENTIAL = ("import kquant, keras; m = keras.Sequential([keras.layers.Dense(3, input_dim=4)]); "
              "keras.Sequential([keras.layers.Dense(2, input_dim=5)]); print(kquant.freeze(m).input_names)")


def test_sequential_input_names_are_the_same_in_every_process():
    names = {subprocess.run([sys.executable, "-c", SEQUENTIAL], capture_output=True, text=True, check=True).stdout.split()[-1]
             for _ in range(2)}
    assert names == {"['input:0']"}


def test_a_keras_layer_name_is_an_input_and_an_output(cnn, calib, tmp_path, capfd):
    """``--inputs image --outputs relu2`` on the frozen graph: the Placeholder of input layer ``image`` and the
    output of layer ``relu2`` (its last node), computing what that layer computes in Keras."""
    kquant.freeze(cnn).save(tmp_path / "m.pb")
    frozen = kquant.freeze(tmp_path / "m.pb", outputs=["relu2"])
    assert frozen.input_names == ["image:0"] and frozen.output_names[0].endswith("Relu:0")
    expected = keras.Model(cnn.input, cnn.get_layer("relu2").output).predict(calib, verbose=0)
    np.testing.assert_allclose(kquant.runtime.Predictor(frozen)(calib), expected, rtol=1e-5, atol=1e-6)
    np.save(tmp_path / "calib.npy", calib)
    code = main(["quantize", str(tmp_path / "m.pb"), "--calib", str(tmp_path / "calib.npy"), "--inputs", "image",
                 "--outputs", "relu2", "-o", str(tmp_path / "q.pb"), "--no-progress"])
    assert code == 0, capfd.readouterr().err
    assert kquant.load_graph_def(tmp_path / "q.pb") is not None
