"""Degrade, don't fail: a transform or the int8 rewrite that cannot handle one subgraph leaves it as it was
(fp32), with one warning naming what and where, and the model still computes its function."""

import re

import numpy as np
import pytest

import kquant
from kquant.quantization.ops.depthwise import DepthwiseConvolution
from kquant.transforms import apply_transforms
from kquant.transforms.rewrites import fold_keras_batch_norms as fold_module
from tests.quantization.test_api import close_in_steps, small_cnn
from tests.transforms.conftest import Case, EXACT, assert_same_outputs, count_ops, randomize_batch_norms

PREPARE = ["remove_freeze_leftovers", "fold_constants(ignore_errors=true)"]


def keras3_bn_convs():
    import keras

    keras.utils.set_random_seed(0)
    image = keras.Input((10, 10, 3))
    x = keras.layers.BatchNormalization()(keras.layers.Conv2D(6, 3, name="first")(image))
    x = keras.layers.BatchNormalization(name="bn_second")(keras.layers.Conv2D(4, 3, name="second")(x))
    model = keras.Model(image, x)
    randomize_batch_norms(model)
    x = np.random.default_rng(0).standard_normal((4, 10, 10, 3)).astype(np.float32)
    return Case(kquant.freeze(model), [x], [np.asarray(model(x, training=False))])


def test_a_fold_that_fails_on_one_match_leaves_it_and_folds_the_rest(monkeypatch):
    case = keras3_bn_convs()
    prepared = apply_transforms(case.frozen, PREPARE)
    real = fold_module._fold

    def failing_on_the_second(match, index):
        if "second" in match["conv"].name:
            raise ValueError("an unforeseen form")
        return real(match, index)

    monkeypatch.setattr(fold_module, "_fold", failing_on_the_second)
    with pytest.warns(UserWarning) as caught:
        result = apply_transforms(prepared, ["fold_keras_batch_norms"])
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1
    assert re.fullmatch(r"fold_keras_batch_norms left \S*bn_second\S* \(AddV2\) as it was: it could not rewrite it "
                        r"\(ValueError: an unforeseen form\)", messages[0]), messages[0]
    assert count_ops(result)["Mul"] == count_ops(prepared)["Mul"] - 1  # the first batch norm folded, the second kept
    assert_same_outputs(case, result, EXACT)


def test_a_unit_the_rewrite_cannot_express_stays_fp32_and_the_rest_is_int8(monkeypatch):
    import keras

    model = small_cnn(keras)
    images = np.random.default_rng(1).random((64, 12, 12, 3), dtype=np.float32)
    def failing_depthwise(self, unit, lowering):
        raise ValueError("an unforeseen form")

    monkeypatch.setattr(DepthwiseConvolution, "lower", failing_depthwise)
    with pytest.warns(UserWarning, match=r"the int8 rewrite kept \S+ \(DepthwiseConv2dNative\) in fp32: it could not "
                                         r"express it in int8 \(ValueError: an unforeseen form\)"):
        qmodel = kquant.quantize(model, images, stem="int8", progress=False)
    ops = qmodel.op_counts()
    assert ops["_FusedQuantizedConv2D"] == 1 and ops["_QuantizedMatMul"] == 2 and ops["DepthwiseConv2dNative"] == 1
    assert "_FusedQuantizedDepthwiseConv2D" not in ops
    assert [u.family for u in qmodel.result.units if u.family in ("convolution", "depthwise")] == ["convolution"]
    assert close_in_steps(qmodel.predict(images), model.predict(images, verbose=0))
