"""What ``kquant.benchmark`` measures, as a report: per variant its timings per batch size and its pass over the
data (accuracy, agreement with fp32), printed as a table or saved as JSON."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from kquant.graph import atomic_write


@dataclasses.dataclass(frozen=True)
class Timing:
    """Wall time of ``runs`` calls at one batch size, after warm-up."""

    batch: int
    median_ms: float
    p90_ms: float
    runs: int

    @property
    def throughput(self) -> float:
        """Records per second at the median latency."""
        return self.batch / self.median_ms * 1e3


@dataclasses.dataclass
class DatasetPass:
    """One timed pass over the whole dataset in batches, as the seeds' launch_benchmark.py reports it."""

    batch_size: int
    batches: int
    duration_s: float      # the graph's run calls only, not reading the data
    records: int
    correct: int | None = None
    top1: float | None = None  # percent
    top5: float | None = None  # percent; None with fewer than 5 classes

    @property
    def throughput(self) -> float:
        return self.records / self.duration_s

    @property
    def latency_ms(self) -> float:
        return self.duration_s / self.batches * 1e3

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "throughput": self.throughput, "latency_ms": self.latency_ms}


@dataclasses.dataclass
class VariantReport:
    """One graph's numbers: serialized size, timings by batch size, accuracy and agreement in percent, and the
    timed pass over the data."""

    name: str
    size_bytes: int
    timings: dict[int, Timing]
    accuracy: float | None = None
    agreement: float | None = None
    dataset: DatasetPass | None = None


@dataclasses.dataclass
class BenchmarkReport:
    """What ``benchmark`` measured; ``str()`` is the printed report, ``save_json`` writes it as JSON."""

    variants: dict[str, VariantReport]
    records: int
    threads: int
    agreement_with: str

    def ratios(self) -> dict:
        """int8 / fp32 size and int8 speed-up (throughput ratio) per batch size; empty without an int8 graph."""
        if "int8" not in self.variants:
            return {}
        fp32, int8 = self.variants["fp32"], self.variants["int8"]
        ratios = {"size": int8.size_bytes / fp32.size_bytes}
        for batch, timing in int8.timings.items():
            ratios[f"speedup_b{batch}"] = timing.throughput / fp32.timings[batch].throughput
        return ratios

    def to_dict(self) -> dict:
        return {
            "records": self.records,
            "threads": self.threads,
            "agreement_with": self.agreement_with,
            "variants": {
                name: {
                    "size_bytes": v.size_bytes,
                    "accuracy": v.accuracy,
                    "agreement": v.agreement,
                    "batches": {str(b): {**dataclasses.asdict(t), "throughput": t.throughput} for b, t in v.timings.items()},
                    "dataset": v.dataset.to_dict() if v.dataset else None,
                }
                for name, v in self.variants.items()
            },
            "ratios": self.ratios(),
        }

    def save_json(self, path) -> Path:
        path = Path(path)
        with atomic_write(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    def __str__(self) -> str:
        rule = "-" * 50
        lines = []
        for v in self.variants.values():
            lines += [rule, f"{v.name} ({self.threads} threads)", _field("Model size (bytes)", v.size_bytes)]
            for timing in v.timings.values():
                lines += [
                    _field("Batch size is", timing.batch),
                    _field("Throughput is (records/sec)", f"{timing.throughput:.1f}"),
                    _field("Latency (millisecond/batch)", f"{timing.median_ms:.4f}  (p90 {timing.p90_ms:.4f}, {timing.runs} runs)"),
                ]
            if v.dataset is not None:
                d = v.dataset
                lines += ["   one pass over the data in batches:",
                          _field("Batch size", d.batch_size),
                          _field("Number of batches", d.batches),
                          _field("Inference duration (seconds)", f"{d.duration_s:.4f}"),
                          _field("Total test records", d.records),
                          _field("Throughput (records/sec)", f"{d.throughput:.1f}"),
                          _field("Latency (ms/batch)", f"{d.latency_ms:.4f}")]
                if d.correct is not None:
                    lines.append(_field("Correct predictions", d.correct))
                    lines.append(_field("Top-1 accuracy (%)", f"{d.top1:.4f}"))
                    if d.top5 is not None:
                        lines.append(_field("Top-5 accuracy (%)", f"{d.top5:.4f}"))
            if v.agreement is not None:
                lines.append(_field("Top-1 agreement (%)", f"{v.agreement:.4f}  (with {self.agreement_with})"))
        lines.append(rule)
        ratios = self.ratios()
        if ratios:
            speedups = ", ".join(f"{r:.2f}x at batch {k.removeprefix('speedup_b')}" for k, r in ratios.items() if k != "size")
            lines += [f"int8 / fp32: size {ratios['size']:.2f}x; speed-up {speedups}", rule]
        return "\n".join(lines)


def _field(label: str, value) -> str:
    return f"   {label:<29}:  {value}"
