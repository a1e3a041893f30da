"""Per-layer report: for each unit, the range used, its output error against fp32, and whether it was kept fp32."""

from __future__ import annotations

import base64
import dataclasses
import html
import io

import numpy as np

from kquant.runtime import GraphRunner

PLOT_CEILING_DB = 60


@dataclasses.dataclass(frozen=True)
class LayerRow:
    node: str
    op: str
    range: tuple
    snr_db: float          # output signal-to-noise ratio of the int8 graph against fp32, on calibration data
    relative_error: float  # max |int8 - fp32| / max |fp32|
    fell_back: bool        # kept fp32: by accuracy-aware tuning, or as the image stem
    layer: str = ""        # the Keras layer of the unit's anchor (kquant.names.LayerNames), as the summary names it


@dataclasses.dataclass(frozen=True)
class LayerReport:
    rows: tuple

    def __str__(self) -> str:
        header = f"{'layer':50s} {'op':22s} {'range':>20s} {'SNR dB':>7s} {'rel.err':>8s}  fp32?"
        lines = [header, "-" * len(header)]
        for r in self.rows:
            rng = f"[{r.range[0]:.3g}, {r.range[1]:.3g}]" if r.range else "-"
            lines.append(f"{(r.layer or r.node)[-50:]:50s} {r.op:22s} {rng:>20s} {r.snr_db:7.1f} {r.relative_error:8.4f}  "
                         f"{'yes' if r.fell_back else ''}")
        return "\n".join(lines)

    def to_html(self, title: str = "kquant per-layer report") -> str:
        """A self-contained page: the table and a bar plot of per-layer SNR (embedded PNG)."""
        rows = "".join(
            f"<tr><td>{html.escape(r.layer or r.node)}</td><td>{html.escape(r.node)}</td><td>{r.op}</td><td>{'' if not r.range else f'[{r.range[0]:.4g}, {r.range[1]:.4g}]'}</td>"
            f"<td>{r.snr_db:.1f}</td><td>{r.relative_error:.4f}</td><td>{'fp32' if r.fell_back else 'int8'}</td></tr>"
            for r in self.rows)
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>"
                "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{padding:2px 8px;"
                "border-bottom:1px solid #ddd;font-size:13px}</style></head><body>"
                f"<h1>{title}</h1><img alt='per-layer SNR' src='data:image/png;base64,{self._plot_png()}'>"
                "<table><tr><th>layer</th><th>output node</th><th>op</th><th>range</th><th>SNR dB</th><th>rel. error</th><th>runs in</th></tr>"
                f"{rows}</table></body></html>")

    def _plot_png(self) -> str:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(self.rows)), 4))
        colors = ["#999999" if r.fell_back else "#1f77b4" for r in self.rows]
        ax.bar(range(len(self.rows)), [min(r.snr_db, PLOT_CEILING_DB) for r in self.rows], color=colors)
        ax.set_xticks(range(len(self.rows)))
        ax.set_xticklabels([r.layer or _short_label(r.node) for r in self.rows], rotation=90, fontsize=7)
        ax.set_ylabel(f"output SNR vs fp32 (dB, capped at {PLOT_CEILING_DB})")
        ax.set_title("per-layer int8 error (grey: kept out of int8)")
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100)
        plt.close(fig)
        return base64.b64encode(buffer.getvalue()).decode()


def layer_report(fp32, int8_graph_def_with_layers, units, fell_back, ranges, batch, layers=None) -> LayerReport:
    """Compare each unit's output in the int8 graph (``int8_graph_def_with_layers`` keeps them) with fp32 on ``batch``."""
    tensors = [u.output_tensor for u in units]
    with GraphRunner(fp32.graph_def, fp32.input_names, tensors) as run:
        reference = run(*batch)
    with GraphRunner(int8_graph_def_with_layers, fp32.input_names, tensors) as run:
        quantized = run(*batch)
    fp32_nodes = {n.name: n.op for n in fp32.graph_def.node}
    layers = layers or {}
    rows = []
    for unit, ref, got in zip(units, reference, quantized):
        noise = float(np.mean((got.astype(np.float64) - ref) ** 2))
        signal = float(np.mean(ref.astype(np.float64) ** 2))
        snr = 10 * np.log10(signal / noise) if noise > 0 and signal > 0 else (float("inf") if noise == 0 else 0.0)
        rel = float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-12))
        rows.append(LayerRow(unit.output, fp32_nodes[unit.anchor], ranges.get(unit.output_tensor, ()), float(snr), rel,
                             unit.anchor in fell_back, layers.get(unit.anchor, unit.anchor)))
    return LayerReport(tuple(rows))


def _short_label(node: str) -> str:
    """The layer part of a node name: ``model/batch_normalization_3/batchnorm/add_1`` -> ``batch_normalization_3``."""
    parts = node.split("/")
    return parts[1] if len(parts) > 2 else parts[-1]
