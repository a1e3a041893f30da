"""fp32 GraphDef + plan + calibrated ranges -> int8 GraphDef, ranges frozen and requantize fused.

Each unit's quantizer lowers it to one int8 op whose Requantize is fused and whose output range is a
constant. Its fp32 output node is replaced by a Dequantize of the same name, so fp32 consumers and graph
outputs keep working; a Dequantize nobody reads is pruned, so neighbouring int8 ops connect directly, with
no Dequantize -> Quantize between them. ``Lowering`` is what the quantizers lower into: the graph, the
ranges, the int8 tensors so far, and the encoding rules for tensors entering int8 from fp32.
"""

from __future__ import annotations

import warnings

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import graph_pb2

from kquant.errors import first_line
from kquant.graphdef import GraphIndex, StaticShapes, extract_sub_graph, node_name, tensor_name
from kquant.quantization import nodes as N
from kquant.quantization.encoding import QTensor, RewriteOptions, qint8_bound, zero_exact
from kquant.quantization.ops import Unit
from kquant.quantization.ops.residual import summand_readers_first
from kquant.quantization.plan import tensors_read_as_int8


def rewrite_graph(graph_def, units: list[Unit], ranges: dict, outputs, options: RewriteOptions = RewriteOptions(),
                  intact=()):
    """(the int8 GraphDef for ``units`` given calibrated ``ranges`` (tensor -> (min, max)), the units as emitted).

    The emitted units leave out those the kernels cannot run, and a residual Add the kernels cannot fuse
    goes back to fp32 (``Unit.without_sum``). The fp32 nodes in ``intact`` (units a later stage runs in bf16)
    keep every node.
    """
    lowering = Lowering(graph_def, units, ranges, options, intact)
    return lowering.run(units, outputs), lowering.emitted


class Lowering:
    def __init__(self, graph_def, units, ranges, options, intact=()):
        self.graph_def = graph_def
        self.intact = set(intact)
        self.index = GraphIndex(graph_def)
        self.nodes = self.index.by_name
        self.ranges = ranges
        self.options = options
        self.quantized: dict[str, QTensor] = {}  # int8 op outputs
        self.entries: dict[tuple, QTensor] = {}   # (fp32 tensor, shift) -> its QuantizeV2
        self.new_nodes = []
        self.scopes = 0
        self.emitted: list[Unit] = []  # the units as emitted, in graph order
        self.shapes = StaticShapes(graph_def)  # imports the graph when first asked
        self.read_as_int8 = tensors_read_as_int8(units)
        self.readers: dict[str, list] = {}  # tensor -> the units reading it in int8 (None: as a summand)
        for unit in units:
            for tensor in unit.data_inputs:
                self.readers.setdefault(tensor, []).append(unit)
            if unit.summand:
                self.readers.setdefault(unit.summand, []).append(None)

    def run(self, units, outputs):
        order = {node.name: i for i, node in enumerate(self.index.topological_order())}
        replaced = set()
        for unit in sorted(units, key=lambda u: order[u.output]):  # a summand's producer comes first
            quantizer = unit.quantizer
            if unit.summand and not quantizer.fuses_sum(unit, self):
                unit = unit.without_sum()
            if not quantizer.supported(unit, self):
                continue
            new_nodes, entries = len(self.new_nodes), dict(self.entries)
            try:
                out = quantizer.lower(unit, self)
            except Exception as exc:  # a form the rewrite cannot express: the unit stays fp32, the rest still int8
                del self.new_nodes[new_nodes:]
                self.entries = entries
                warnings.warn(f"the int8 rewrite kept {unit.anchor} ({self.nodes[unit.anchor].op}) in fp32: it could not "
                              f"express it in int8 ({type(exc).__name__}: {first_line(exc)})", stacklevel=3)
                continue
            if out is not None:
                self.quantized[unit.output_tensor] = out
                self.emit(N.dequantize(unit.output, out.tensor, out.min, out.max, out.dtype, out.mode))
            self.emitted.append(unit)
            replaced.update(unit.nodes)
        result = graph_pb2.GraphDef()
        result.versions.CopyFrom(self.graph_def.versions)
        result.library.CopyFrom(self.graph_def.library)
        result.node.extend(n for n in self.graph_def.node if n.name not in replaced)
        result.node.extend(self.new_nodes)
        return summand_readers_first(extract_sub_graph(result, outputs))

    def emit(self, *nodes) -> None:
        self.new_nodes.extend(nodes)

    def const_scope(self) -> str:
        """A short, unique name scope for one op's constants (long node names made a third of fer's int8 file)."""
        self.scopes += 1
        return f"kquant/{self.scopes}"

    def unsigned(self, tensor: str) -> bool:
        """Whether ``tensor`` reaches its int8 reader unsigned (quint8 codes or a non-negative fp32 range)."""
        return self.quantized[tensor].dtype == tf.quint8 if tensor in self.quantized else self.ranges[tensor][0] >= 0

    def pair_safe(self, x: QTensor) -> bool:
        return self.options.pair_safe_weights and x.dtype == tf.quint8

    def input(self, tensor: str, reader: Unit | None) -> QTensor:
        """The int8 form of ``tensor`` for ``reader`` (None: a summand): an int8 op's output, or a QuantizeV2 with
        the calibrated range. A signed fp32 tensor gets a shifted form for readers that take one, a qint8 one
        for the others (two QuantizeV2 when its readers differ)."""
        if tensor in self.quantized:
            return self.quantized[tensor]
        lo, hi = self.ranges[tensor]
        shift = zero_exact(lo, hi) if lo < 0 and self._reader_can_shift(reader) else None
        if (tensor, shift) in self.entries:
            return self.entries[tensor, shift]
        base = node_name(tensor) + ("_quantize" if tensor.endswith(":0") else f"_{tensor.rsplit(':', 1)[1]}_quantize")
        source = tensor
        if shift:
            base, dtype, mode, (lo, hi) = f"{base}_shifted", tf.quint8, "MIN_FIRST", shift
        elif lo >= 0:
            dtype, mode, lo = tf.quint8, "SCALED", 0.0
            source = self._before_clamp(tensor, hi)
        else:
            dtype, mode, bound = tf.qint8, "SCALED", qint8_bound(lo, hi)
            lo, hi = -bound, bound
        self.emit(N.const(f"{base}/min", np.float32(lo)), N.const(f"{base}/max", np.float32(hi)),
                  N.quantize_v2(base, source, f"{base}/min", f"{base}/max", dtype, mode))
        self.entries[tensor, shift] = QTensor(f"{base}:0", f"{base}:1", f"{base}:2", dtype, mode, shift)
        return self.entries[tensor, shift]

    def _before_clamp(self, tensor: str, high: float) -> str:
        """The input of the Relu (or Relu6 with ``high`` <= 6) producing ``tensor``, else ``tensor``: a quint8 QuantizeV2
        to [0, high] saturates what the Relu would clamp, so the Relu need not run (it is pruned when no fp32 op reads it)."""
        producer = self.nodes.get(node_name(tensor))
        if producer is None or not tensor.endswith(":0") or producer.name in self.intact or not (
                producer.op == "Relu" or (producer.op == "Relu6" and high <= 6.0)):
            return tensor
        return tensor_name(producer.input[0])

    def can_shift(self, tensor: str) -> bool:
        """Whether every int8 reader of ``tensor`` can take it shifted to unsigned."""
        return self.options.kernels == "onednn" and all(map(self._reader_can_shift, self.readers.get(tensor, ())))

    def _reader_can_shift(self, reader: Unit | None) -> bool:
        """Whether ``reader`` can take its input shifted to unsigned (``OpQuantizer.reads_shifted``; a summand,
        None, is read as unsigned data with low added to the bias); never with the public kernels.

        Without VNNI oneDNN halves the weights of a convolution with a signed input (``sa0.5`` in its
        verbose log); an unsigned input keeps all 8 bits.
        """
        if self.options.kernels != "onednn":
            return False
        return reader is None or reader.quantizer.reads_shifted(reader, self)

    def shifted_output(self, base: str, scope: str, dtype, shift) -> QTensor:
        """The QTensor of op ``base``'s output; a shifted one gets constants holding its float range for its readers."""
        if shift is None:
            return QTensor(f"{base}:0", f"{base}:1", f"{base}:2", dtype)
        self.emit(N.const(f"{scope}/low", np.float32(shift[0])), N.const(f"{scope}/high", np.float32(shift[1])))
        return QTensor(f"{base}:0", f"{scope}/low", f"{scope}/high", dtype, "MIN_FIRST", shift)
