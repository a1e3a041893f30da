"""kquant.benchmark and `kquant bench`: report structure, consistent numbers, interleaved timing, progress switch."""

import json

import numpy as np
import pytest

import kquant
from kquant.benchmark import benchmark, time_interleaved, top1
from kquant.cli import main
from kquant.errors import ConfigurationError

RUNS = 3
BATCHES = (1, 4)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.random((24, 28, 28, 1)).astype(np.float32), rng.integers(0, 5, 24)


@pytest.fixture(scope="module")
def qmodel(conv_model, data):
    return kquant.quantize(conv_model, data[0], progress=False)


@pytest.fixture(scope="module")
def report(conv_model, qmodel, data):
    x, y = data
    return benchmark(conv_model, qmodel, batches=BATCHES, runs=RUNS, data=x, labels=y, progress=False)


def test_report_has_timings_for_every_graph_and_batch(report):
    assert list(report.variants) == ["fp32", "int8"]
    for variant in report.variants.values():
        assert list(variant.timings) == list(BATCHES)
        for batch, timing in variant.timings.items():
            assert timing.batch == batch and timing.runs == RUNS
            assert 0 < timing.median_ms <= timing.p90_ms
            assert timing.throughput == pytest.approx(batch / timing.median_ms * 1e3)
    assert report.threads >= 1


def test_sizes_are_the_serialized_graphs(report, qmodel, tmp_path):
    assert report.variants["int8"].size_bytes == qmodel.save(tmp_path / "int8.pb").stat().st_size
    assert report.variants["fp32"].size_bytes == qmodel.result.fp32.save(tmp_path / "fp32.pb").stat().st_size
    assert report.ratios()["size"] == pytest.approx(report.variants["int8"].size_bytes / report.variants["fp32"].size_bytes)


def test_accuracy_and_agreement_match_the_predictions(report, conv_model, qmodel, data):
    x, y = data
    fp32 = conv_model.predict(x, verbose=0).argmax(1)
    int8 = qmodel.predict(x).argmax(1)
    assert report.records == len(x)
    assert report.variants["fp32"].accuracy == pytest.approx(100 * np.mean(fp32 == y))
    assert report.variants["int8"].accuracy == pytest.approx(100 * np.mean(int8 == y))
    assert report.variants["int8"].agreement == pytest.approx(100 * np.mean(int8 == fp32))
    assert report.variants["fp32"].agreement is None  # fp32 is the reference


def test_reference_outputs_set_the_agreement_of_both(conv_model, qmodel, data):
    x, _ = data
    reference = np.zeros(len(x), np.int64)  # class ids: agreement is the share predicted as class 0
    result = benchmark(conv_model, qmodel, batches=1, runs=1, data=x, reference=reference, progress=False)
    assert result.agreement_with == "reference"
    assert result.variants["fp32"].agreement == pytest.approx(100 * np.mean(conv_model.predict(x, verbose=0).argmax(1) == 0))
    assert result.variants["int8"].agreement == pytest.approx(100 * np.mean(qmodel.predict(x).argmax(1) == 0))


def test_fp32_alone_on_random_inputs_and_rows_repeated_to_fill_a_batch(conv_model, data):
    alone = benchmark(conv_model, batches=(2,), runs=2, progress=False)
    assert list(alone.variants) == ["fp32"] and alone.records == 0 and alone.ratios() == {}
    assert alone.variants["fp32"].accuracy is None and alone.variants["fp32"].agreement is None
    few = benchmark(conv_model, batches=(8,), runs=1, data=data[0][:3], progress=False)
    assert few.records == 3 and few.variants["fp32"].timings[8].batch == 8


def test_printed_report_uses_the_seed_labels_and_json_round_trips(report, tmp_path):
    text = str(report)
    for label in ("Model size (bytes)", "Batch size is", "Throughput is (records/sec)", "Latency (millisecond/batch)",
                  "Total test records", "Top-1 accuracy (%)", "Top-1 agreement (%)", "Number of batches",
                  "Inference duration (seconds)", "Throughput (records/sec)", "Latency (ms/batch)", "Correct predictions"):
        assert label in text
    assert text.count("Latency (millisecond/batch)") == 2 * len(BATCHES)
    assert "(with fp32)" in text and "int8 / fp32: size" in text and "at batch 4" in text
    saved = json.loads(report.save_json(tmp_path / "bench.json").read_text())
    assert saved == json.loads(json.dumps(report.to_dict()))
    assert saved["variants"]["int8"]["batches"]["4"]["runs"] == RUNS
    assert saved["ratios"]["speedup_b4"] == pytest.approx(
        saved["variants"]["int8"]["batches"]["4"]["throughput"] / saved["variants"]["fp32"]["batches"]["4"]["throughput"])


def test_timing_rounds_interleave_the_graphs():
    calls = []
    seconds = time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 10, warmup=2, rounds=5)
    assert [len(s) for s in seconds.values()] == [10, 10]
    assert calls[:4] == ["a", "a", "b", "b"]  # warm-up
    timed = "".join(calls[4:])
    assert timed == "aabb" + "bbaa" + "aabb" + "bbaa" + "aabb"  # order alternates, so neither always runs first


def test_top1_reads_sigmoid_outputs_as_binary_and_softmax_by_argmax():
    assert top1(np.array([[0.2], [0.7]])).tolist() == [0, 1]
    assert top1(np.array([[0.1, 0.6, 0.3]])).tolist() == [1]
    assert top1(np.array([3, 1])).tolist() == [3, 1]


@pytest.mark.parametrize("kwargs, message", [
    ({"batches": (0,)}, "batches"),
    ({"runs": 0}, "runs"),
    ({"labels": [1, 2]}, "pass data"),
    ({"data": True, "labels": np.zeros(5)}, "5 labels for 24 records"),
])
def test_bad_arguments_raise_configuration_error(conv_model, data, kwargs, message):
    kwargs = {"runs": 1, **kwargs, **({"data": data[0]} if "data" in kwargs else {})}
    with pytest.raises(ConfigurationError, match=message):
        benchmark(conv_model, progress=False, **kwargs)


def test_progress_bar_is_drawn_on_stderr_unless_silenced(conv_model, capfd):
    benchmark(conv_model, batches=1, runs=2, progress=False)
    assert "benchmarking" not in capfd.readouterr().err
    benchmark(conv_model, batches=1, runs=2, progress=True)
    assert "benchmarking" in capfd.readouterr().err


def test_cli_bench_prints_the_report_and_writes_json(conv_pb, qmodel, data, tmp_path, capfd):
    x, y = data
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    int8 = qmodel.save(tmp_path / "int8.pb")
    out_json = tmp_path / "out" / "bench.json"
    args = ["bench", str(conv_pb), "--int8", str(int8), "--batch", "1,2", "--runs", "2", "--data", str(tmp_path / "x.npy"),
            "--labels", str(tmp_path / "y.npy"), "--json", str(out_json), "--no-progress"]
    assert main(args) == 0
    out, err = capfd.readouterr()
    assert "Top-1 accuracy (%)" in out and f"wrote {out_json}" in out
    assert "benchmarking" not in err
    saved = json.loads(out_json.read_text())
    assert sorted(saved["variants"]) == ["fp32", "int8"] and saved["records"] == len(x)
    assert list(saved["variants"]["int8"]["batches"]) == ["1", "2"]
    assert saved["variants"]["int8"]["size_bytes"] == int8.stat().st_size


def test_cli_bench_rejects_a_bad_batch_list(conv_pb, capfd):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", str(conv_pb), "--batch", "1,x"])
    assert exit_info.value.code == 2
    assert "not a list of positive batch sizes" in capfd.readouterr().err


def test_a_timed_pass_over_the_whole_dataset_in_the_seeds_shape(report, conv_model, data):
    x, y = data
    scores = conv_model.predict(x, verbose=0)
    for variant in report.variants.values():
        d = variant.dataset
        assert (d.batch_size, d.records, d.batches) == (max(BATCHES), len(x), -(-len(x) // max(BATCHES)))
        assert d.duration_s > 0 and d.throughput == pytest.approx(len(x) / d.duration_s)
        assert d.latency_ms == pytest.approx(d.duration_s / d.batches * 1e3)
        assert d.top1 == pytest.approx(100 * d.correct / len(x)) and d.top1 == pytest.approx(variant.accuracy)
    fp32 = report.variants["fp32"].dataset
    assert fp32.correct == int(np.sum(scores.argmax(1) == y))
    top5 = np.argsort(-scores, axis=1)[:, :5]
    assert fp32.top5 == pytest.approx(100 * np.mean((top5 == y[:, None]).any(1)))
    assert report.to_dict()["variants"]["fp32"]["dataset"]["latency_ms"] == pytest.approx(fp32.latency_ms)
