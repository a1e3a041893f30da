"""Accuracy-aware quantization: a model with one sensitive layer, trained on Fashion-MNIST.

The sensitive layer is made by a function-preserving reparameterization: one hidden unit's incoming
weights are scaled by 1000 and its outgoing ones by 1/1000 (ReLU commutes with positive scaling), so
fp32 is unchanged but that layer's int8 output range is swamped by one huge channel.
"""

import collections

import numpy as np
import pytest

import kquant
from kquant import datasets
from kquant.quantization.pipeline import plan


@pytest.fixture(scope="module")
def outlier_model():
    import keras

    keras.utils.set_random_seed(0)
    x, y = datasets.fashion_mnist("train")
    x, y = x[:6000].reshape(-1, 784), y[:6000]
    model = keras.Sequential([keras.Input((784,), name="pixels"), keras.layers.Dense(64, activation="relu"),
                              keras.layers.Dense(64, activation="relu", name="sensitive"), keras.layers.Dense(10)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=2, batch_size=128, verbose=0)
    (w1, b1), (w2, b2) = model.layers[1].get_weights(), model.layers[2].get_weights()
    w1, b1, w2 = w1.copy(), b1.copy(), w2.copy()
    w1[:, 0] *= 1000.0
    b1[0] *= 1000.0
    w2[0, :] /= 1000.0
    model.layers[1].set_weights([w1, b1])
    model.layers[2].set_weights([w2, b2])
    xt, yt = datasets.fashion_mnist("test")
    return model, x[:512], xt[:2000].reshape(-1, 784), yt[:2000]


def accuracy_on(xt, yt):
    return lambda predict: float(np.mean(predict(xt).argmax(1) == yt))


def test_plain_int8_misses_the_target_and_tuning_meets_it(outlier_model):
    model, calib, xt, yt = outlier_model
    evaluate = accuracy_on(xt, yt)
    fp32 = float(np.mean(model.predict(xt, verbose=0).argmax(1) == yt))
    plain = kquant.quantize(model, calib, progress=False)
    assert fp32 - evaluate(plain.predict) > 0.02  # the outlier really hurts plain int8

    tuned = kquant.quantize(model, calib, eval_fn=evaluate, max_accuracy_drop=0.01, relative=True, progress=False)
    assert (fp32 - evaluate(tuned.predict)) / fp32 <= 0.01
    assert tuned.trials[0].action == "int8" and len(tuned.trials) >= 2
    assert any("sensitive" in name for name in tuned.result.fell_back) or any(
        "dense" in name and "sensitive" not in name for name in tuned.result.fell_back)
    assert collections.Counter(n.op for n in tuned.graph_def.node)["_QuantizedMatMul"] >= 1  # the rest stays int8
    rows = tuned.report().rows
    assert {r.node for r in rows if r.fell_back} == {u.output for u in plan(tuned.result.fp32)
                                                     if u.anchor in tuned.result.fell_back}
    assert {r.node for r in rows if not r.fell_back} == {u.output for u in tuned.result.units}


def test_missed_target_still_returns_the_best_model_and_says_by_how_much(outlier_model):
    model, calib, xt, yt = outlier_model
    with pytest.warns(UserWarning, match="over the target"):
        qmodel = kquant.quantize(model, calib, eval_fn=accuracy_on(xt, yt), max_accuracy_drop=0.0, max_trials=1,
                                 progress=False)
    assert len(qmodel.trials) == 1
    assert qmodel.predict(xt[:3]).shape == (3, 10)


def test_bf16_fallback_runs_the_kept_ops_in_bfloat16(outlier_model):
    model, calib, xt, yt = outlier_model
    evaluate = accuracy_on(xt, yt)
    qmodel = kquant.quantize(model, calib, eval_fn=evaluate, max_accuracy_drop=0.01, fallback="bf16", progress=False)
    assert qmodel.result.fell_back
    bf16_ops = [n for n in qmodel.graph_def.node if n.op == "MatMul" and n.attr["T"].type == 14]  # DT_BFLOAT16
    assert len(bf16_ops) == len(qmodel.result.fell_back)
    fp32 = float(np.mean(model.predict(xt, verbose=0).argmax(1) == yt))
    assert (fp32 - evaluate(qmodel.predict)) / fp32 <= 0.01


def test_per_layer_report_table_and_page(outlier_model, tmp_path):
    model, calib, xt, yt = outlier_model
    qmodel = kquant.quantize(model, calib, progress=False)
    report = qmodel.report()
    assert len(report.rows) == 3
    worst = min(report.rows, key=lambda r: r.snr_db)
    assert "sensitive" in worst.node or worst.relative_error > 0.05
    assert all(not r.fell_back for r in report.rows)
    assert "SNR dB" in str(report)
    page = report.to_html()
    assert "data:image/png;base64," in page and page.count("<tr>") == 4


def test_cli_report_writes_a_page(outlier_model, tmp_path):
    from kquant.cli import main

    model, calib, _, _ = outlier_model
    model.save(tmp_path / "m.keras")
    np.save(tmp_path / "calib.npy", calib[:128])
    page = tmp_path / "report.html"
    assert main(["quantize", str(tmp_path / "m.keras"), "--calib", str(tmp_path / "calib.npy"), "-o",
                 str(tmp_path / "q.pb"), "--report", str(page), "--no-progress"]) == 0
    assert "<img" in page.read_text()


def test_a_fallback_that_lowers_the_score_is_undone(monkeypatch):
    """The search on scripted scores: falling back "a" hurts, so "b" is tried without it and "b + c" meets."""
    from kquant.quantization import tuning

    scores = {(): 0.90, ("a",): 0.85, ("b",): 0.93, ("b", "c"): 0.995, ("a", "b", "c"): 0.97}
    monkeypatch.setattr(tuning, "Predictor", lambda graph: type("P", (), {"close": lambda self: None, "key": graph})())
    units = [type("U", (), {"anchor": name})() for name in "abc"]
    graph, _, fell_back, trials = tuning.tune(
        1.0, lambda predictor: scores[predictor.key], lambda calibration, kept: tuple(kept), units,
        calibrations=["minmax"], max_accuracy_drop=0.01, relative=True, max_trials=10)
    assert [t.fell_back for t in trials] == [(), ("a",), ("b",), ("b", "c")]
    assert fell_back == ("b", "c") and graph == ("b", "c")


def test_tuning_shows_a_bar_over_the_trial_budget_with_the_last_score(monkeypatch, capsys):
    from kquant.quantization import tuning

    scores = {(): 0.90, ("a",): 0.92, ("a", "b"): 0.93}
    monkeypatch.setattr(tuning, "Predictor", lambda graph: type("P", (), {"close": lambda self: None, "key": graph})())
    units = [type("U", (), {"anchor": name})() for name in "ab"]
    for progress in (True, False):
        tuning.tune(1.0, lambda predictor: scores[predictor.key], lambda calibration, kept: tuple(kept), units,
                    calibrations=["minmax"], max_accuracy_drop=0.01, relative=True, max_trials=5, progress=progress)
        err = capsys.readouterr().err
        if progress:
            assert "tuning" in err and "3/5" in err and "score=0.9300" in err, err
        else:
            assert err == ""
