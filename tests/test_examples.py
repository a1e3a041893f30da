"""The examples in examples/keras/ run end to end in reduced size (--quick), as CI runs them, and print the report."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "keras"


def run_example(name: str) -> str:
    result = subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py"), "--quick", "--no-progress"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "benchmarking" not in result.stderr and "calibrating" not in result.stderr  # --no-progress
    return result.stdout


def field(report: str, label: str) -> list[float]:
    """The numbers after ``label :`` in each variant block (fp32 first, then int8)."""
    return [float(v) for v in re.findall(re.escape(label) + r"\s*:\s+([\d.]+)", report)]


def check_report(report: str) -> None:
    assert report.count("Throughput is (records/sec)") == 4  # fp32 and int8, batch 1 and 32
    assert field(report, "Batch size is") == [1, 32, 1, 32]
    assert all(v > 0 for v in field(report, "Latency (millisecond/batch)"))
    fp32_size, int8_size = field(report, "Model size (bytes)")
    assert int8_size < 0.5 * fp32_size
    assert "int8 / fp32: size" in report


@pytest.mark.parametrize("name, floor", [("fashion_mnist_cnn", 70.0), ("wide_deep_adult", 80.0)])
def test_trained_example_reports_accuracy_of_both_graphs(name, floor):
    report = run_example(name)
    check_report(report)
    fp32, int8 = field(report, "Top-1 accuracy (%)")
    assert fp32 > floor
    assert abs(fp32 - int8) <= 2.0, (fp32, int8)
    assert field(report, "Top-1 agreement (%)")[0] >= 90.0


def test_fer_example_reports_agreement_with_the_keras_model():
    report = run_example("fer_emotion")
    check_report(report)
    assert "int8 units:" in report
    fp32, int8 = field(report, "Top-1 agreement (%)")
    assert fp32 == 100.0  # the frozen, optimized fp32 graph is the Keras model
    assert int8 >= 80.0
    assert field(report, "Total test records") == [100, 100]


def load_example_module(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_explicit_sizes_win_over_quick():
    fashion = load_example_module("fashion_mnist_cnn")
    args = fashion.parse_args(["--quick", "--epochs", "3", "--runs", "7"])
    assert (args.train_samples, args.epochs, args.test_samples, args.runs) == (6000, 3, 1000, 7)
    assert fashion.parse_args([]).epochs == 2
    adult = load_example_module("wide_deep_adult").parse_args(["--quick", "--train-rows", "500"])
    assert (adult.epochs, adult.runs, adult.train_rows) == (1, 10, 500)
