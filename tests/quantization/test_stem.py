"""The image stem: a conv with at most 4 input channels reading the model input stays fp32 unless stem="int8"."""

import numpy as np
import pytest

import kquant
from kquant.errors import ConfigurationError
from kquant.graphdef import node_name
from kquant.quantization.plan import stem_convs
from kquant.quantization.pipeline import optimize, plan


def stem_ops(model) -> list[str]:
    """The op types of ``model``'s image stems, sorted."""
    fp32 = optimize(kquant.freeze(model))
    nodes = {n.name: n for n in fp32.graph_def.node}
    return sorted(nodes[anchor].op for anchor in stem_convs(fp32.graph_def, plan(fp32)))


def test_a_conv_reading_a_3_channel_image_through_a_rescaling_is_the_stem_and_the_conv_after_it_is_not():
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((10, 10, 3), name="image"), keras.layers.Rescaling(1 / 127.5, offset=-1),
                              keras.layers.Conv2D(4, 3, activation="relu"), keras.layers.Conv2D(2, 3)])
    fp32 = optimize(kquant.freeze(model))
    units = plan(fp32)
    assert [u.family for u in units] == ["convolution", "convolution"]
    assert stem_convs(fp32.graph_def, units) == [units[0].anchor]


def test_two_branches_reading_the_image_are_both_stems_but_a_conv_on_8_channels_is_not():
    import keras

    keras.utils.set_random_seed(0)
    image = keras.Input((10, 10, 1), name="image")
    left = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(image)
    right = keras.layers.DepthwiseConv2D(3, padding="same")(image)
    model = keras.Model(image, keras.layers.Concatenate()([left, right]))
    assert stem_ops(model) == ["Conv2D", "DepthwiseConv2dNative"]

    wide = keras.Sequential([keras.Input((10, 10, 8), name="x"), keras.layers.Conv2D(4, 3)])
    assert stem_ops(wide) == []


def test_a_conv_after_a_dense_layer_is_not_a_stem():
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,), name="x"), keras.layers.Dense(64), keras.layers.Reshape((8, 8, 1)),
                              keras.layers.Conv2D(4, 3)])
    assert stem_ops(model) == []


def stem_cnn():
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((12, 12, 1), name="image"), keras.layers.Conv2D(8, 3, activation="relu"),
                             keras.layers.Conv2D(8, 3, activation="relu"), keras.layers.GlobalAveragePooling2D(),
                             keras.layers.Dense(3)])


def test_quantize_keeps_the_stem_fp32_by_default_and_stem_int8_quantizes_it():
    model = stem_cnn()
    x = np.random.default_rng(0).random((48, 12, 12, 1), dtype=np.float32)
    default = kquant.quantize(model, x[:32], progress=False)
    every = kquant.quantize(model, x[:32], stem="int8", progress=False)
    assert default.op_counts()["_FusedQuantizedConv2D"] == 1 and default.op_counts()["Conv2D"] == 1
    assert every.op_counts()["_FusedQuantizedConv2D"] == 2 and "Conv2D" not in every.op_counts()
    assert len(default.result.stems) == 1 and every.result.stems == ()
    nodes = {n.name: n for n in default.graph_def.node}
    stem = nodes[default.result.stems[0]]
    assert nodes[node_name(stem.input[0])].op == "Placeholder"  # the image goes to the fp32 stem unrounded
    rows = {row.node: row for row in default.report().rows}
    stem_row = next(row for row in rows.values() if row.op == "Conv2D" and row.fell_back)
    assert [row.fell_back for row in rows.values()].count(True) == 1 and stem_row.snr_db == float("inf")
    assert not any(row.fell_back for row in every.report().rows)
    want = model.predict(x[32:], verbose=0)
    for qmodel in (default, every):
        got = qmodel.predict(x[32:])
        assert np.abs(got - want).max() <= 0.05 * np.abs(want).max()


def test_graph_converter_and_cli_take_the_stem_choice(tmp_path):
    from kquant.cli import main

    path = kquant.freeze(stem_cnn()).save(tmp_path / "fp32.pb")
    x = np.random.default_rng(0).random((32, 12, 12, 1), dtype=np.float32)
    converted = kquant.GraphConverter(str(path), None, None, None, stem="int8").convert(x, progress=False)
    assert converted.op_counts()["_FusedQuantizedConv2D"] == 2
    np.save(tmp_path / "x.npy", x)
    assert main(["quantize", str(path), "--calib", str(tmp_path / "x.npy"), "-o", str(tmp_path / "q.pb"), "--no-progress"]) == 0
    written = [n.op for n in kquant.load_graph_def(tmp_path / "q.pb").node]
    assert written.count("_FusedQuantizedConv2D") == 1 and written.count("Conv2D") == 1  # default: stem fp32


def test_a_seed_log_range_for_the_stem_conv_becomes_the_range_its_fp32_output_is_quantized_with(tmp_path):
    path = kquant.freeze(stem_cnn()).save(tmp_path / "fp32.pb")
    fp32 = optimize(kquant.freeze(path))
    stem = plan(fp32)[0]
    log = tmp_path / "min_max_log.txt"
    log.write_text(f";{stem.anchor}_eightbit_requant_range__print__;__requant_min_max:[0][0.5]\n")
    x = np.random.default_rng(0).random((32, 12, 12, 1), dtype=np.float32)
    qmodel = kquant.GraphConverter(str(path), None, None, None).convert(x, min_max_log=str(log), progress=False)
    nodes = {n.name: n for n in qmodel.graph_def.node}
    (entry,) = [n for n in qmodel.graph_def.node if n.op == "QuantizeV2" and n.name == f"{stem.output}_quantize"]
    assert nodes[node_name(entry.input[2])].attr["value"].tensor.float_val[0] == pytest.approx(0.5)


def test_a_model_whose_only_conv_is_the_stem_comes_back_fp32_with_a_warning_naming_it():
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 3), name="image"), keras.layers.Conv2D(4, 3)])
    x = np.random.default_rng(0).random((8, 8, 8, 3), dtype=np.float32)
    with pytest.warns(UserWarning, match="image stem, kept fp32 \\(stem='int8' quantizes it\\)"):
        qmodel = kquant.quantize(model, x, progress=False)
    assert "_FusedQuantizedConv2D" not in qmodel.op_counts()


def test_an_unknown_stem_choice_is_named():
    with pytest.raises(ConfigurationError, match="stem='bf16' is not valid; expected one of 'fp32', 'int8'"):
        kquant.quantize(stem_cnn(), np.zeros((4, 12, 12, 1), np.float32), stem="bf16", progress=False)
