"""fp32 GraphDef + plan + calibrated ranges -> int8 GraphDef, ranges frozen and requantize fused.

Each unit becomes one oneDNN int8 op whose Requantize is fused and whose output range is a
constant. Its fp32 output node is replaced by a Dequantize of the same name, so fp32
consumers and graph outputs keep working; a Dequantize nobody reads is pruned, so neighbouring
int8 ops connect directly, with no Dequantize -> Quantize between them. A MatMul read only by
fp32 ops dequantizes inside the kernel.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import graph_pb2
from tensorflow.python.framework import tensor_util

from kquant.errors import first_line
from kquant.graph import (
    ancestors,
    consumers,
    extract_sub_graph,
    is_control_input,
    node_name,
    nodes_by_name,
    tensor_name,
)
from kquant.quantization import nodes as N
from kquant.quantization.calibration import MIN_RANGE_WIDTH
from kquant.quantization.patterns import (
    NON_NEGATIVE_ACTIVATIONS,
    Unit,
    tensors_read_as_int8,
    topological_order,
)
from kquant.transforms.folding import StaticShapes

CONV_OP_NAMES = {"Conv2D": "_FusedQuantizedConv2D", "DepthwiseConv2dNative": "_FusedQuantizedDepthwiseConv2D"}
CONV_ATTRS = ("strides", "padding", "dilations", "explicit_paddings", "data_format")
PUBLIC_CONV_ATTRS = ("strides", "padding", "dilations")
KERNELS = ("onednn", "public")


@dataclasses.dataclass(frozen=True)
class QTensor:
    """An int8 tensor, the tensors holding its float range, its dtype and encoding mode."""

    tensor: str
    min: str
    max: str
    dtype: tf.DType
    mode: str = "SCALED"
    # A signed tensor kept as quint8 codes q for x = low + q * (high - low) / 255 (MIN_FIRST), so convolutions
    # read it unsigned; they declare the range [0, high - low] and add low * sum(weights) to their bias.
    shift: tuple[float, float] | None = None


@dataclasses.dataclass(frozen=True)
class RewriteOptions:
    per_channel: bool = True
    # Without VNNI, oneDNN adds the u8*s8 products of input channels 2k and 2k+1 in int16, which
    # saturates for 8-bit activations and weights; pair_safe_weights scales weights that meet
    # unsigned inputs so that no such pair can exceed it (see _quantize_weights).
    pair_safe_weights: bool = False
    # "onednn": the internal _FusedQuantized*/_QuantizedMatMul ops (fastest); "public": the
    # Quantized*WithBias*AndRequantize ops, which take only unsigned conv inputs and fuse less.
    kernels: str = "onednn"


def rewrite_graph(graph_def, units: list[Unit], ranges: dict, outputs, options: RewriteOptions = RewriteOptions()):
    """(the int8 GraphDef for ``units`` given calibrated ``ranges`` (tensor -> (min, max)), the units as emitted).

    The emitted units leave out those the kernels cannot run, and a residual Add the kernels cannot fuse
    goes back to fp32 (``Unit.without_sum``).
    """
    rewriter = _Rewriter(graph_def, ranges, options)
    return rewriter.run(units, outputs), rewriter.emitted


class _Rewriter:
    def __init__(self, graph_def, ranges, options):
        self.graph_def = graph_def
        self.nodes = {n.name: n for n in graph_def.node}
        self.ranges = ranges
        self.options = options
        self.quantized: dict[str, QTensor] = {}  # int8 op outputs
        self.entries: dict[tuple, QTensor] = {}   # (fp32 tensor, shift) -> its QuantizeV2
        self.new_nodes = []
        self.scopes = 0
        self.emitted: list[Unit] = []  # the units as emitted, in graph order
        self.shapes = StaticShapes(self.graph_def)  # imports the graph when first asked

    def run(self, units, outputs):
        order = {node.name: i for i, node in enumerate(topological_order(self.graph_def, self.nodes))}
        self.consumers = consumers(self.graph_def)
        self.readers = {}
        for unit in units:
            for tensor in unit.data_inputs:
                self.readers.setdefault(tensor, []).append(unit)
            if unit.summand:
                self.readers.setdefault(unit.summand, []).append(None)  # None: read as a summand
        read_as_int8 = tensors_read_as_int8(units)
        for unit in units:
            if unit.pad:  # the int8 op pads: it sees the conv as if the Pad were its explicit padding
                paddings = self.nodes[node_name(self.nodes[unit.pad].input[1])]
                self.nodes[unit.anchor] = _with_explicit_padding(self.nodes[unit.anchor], paddings)
        replaced = set()
        for unit in sorted(units, key=lambda u: order[u.output]):  # a summand's producer comes first
            if unit.summand and not self._sum_supported(unit):
                unit = unit.without_sum()
            if not self._supported(unit):
                continue
            new_nodes, entries = len(self.new_nodes), dict(self.entries)
            try:
                self._emit(unit, read_as_int8)
            except Exception as exc:  # a form the rewrite cannot express: the unit stays fp32, the rest still int8
                del self.new_nodes[new_nodes:]
                self.entries = entries
                self.quantized.pop(unit.output_tensor, None)
                warnings.warn(f"the int8 rewrite kept {unit.anchor} ({self.nodes[unit.anchor].op}) in fp32: it could not "
                              f"express it in int8 ({type(exc).__name__}: {first_line(exc)})", stacklevel=3)
                continue
            self.emitted.append(unit)
            replaced.update(unit.nodes)
        result = graph_pb2.GraphDef()
        result.versions.CopyFrom(self.graph_def.versions)
        result.library.CopyFrom(self.graph_def.library)
        result.node.extend(n for n in self.graph_def.node if n.name not in replaced)
        result.node.extend(self.new_nodes)
        return _summand_readers_first(extract_sub_graph(result, outputs))

    def _emit(self, unit: Unit, read_as_int8) -> None:
        in_kernel_dequantize = self.options.kernels == "onednn" or not unit.activation  # no public Relu+Dequantize op
        if unit.kind == "matmul" and unit.output_tensor not in read_as_int8 and in_kernel_dequantize:
            self._matmul(unit, to_float=True)
            return
        out = _EMITTERS[unit.kind](self, unit)
        self.quantized[unit.output_tensor] = out
        self.new_nodes.append(N.dequantize(unit.output, out.tensor, out.min, out.max, out.dtype, out.mode))

    def _supported(self, unit: Unit) -> bool:
        """Whether the chosen kernels can run ``unit``; the public ops need an unsigned input (and convs a plain padding)."""
        if unit.kind == "ConcatV2":  # QuantizedConcat requantizes its inputs to the union of their ranges, read
            sources = [self.quantized.get(t) for t in unit.data_inputs]  # as min + code * step: all unsigned
            unsigned = all(self.ranges[t][0] >= 0 if s is None else s.dtype == tf.quint8 and s.shift is None
                           for t, s in zip(unit.data_inputs, sources))  # an fp32 input gets a quint8 QuantizeV2
            return unsigned and any(sources) and self._concat_axis(unit) is not None
        if unit.kind == "conv" and self._grouped(unit):
            return False
        if unit.kind not in ("conv", "matmul"):  # pools and reshapes only continue an int8 island
            source = self.quantized.get(unit.data_input)
            return source is not None and (unit.kind != "Reshape" or source.dtype == tf.quint8)  # no qint8 QuantizedReshape
        if self.options.kernels == "onednn":
            return True
        # the public ops compute wrong results for signed inputs (MIN_FIRST or qint8): those units stay fp32
        unsigned = (self.quantized[unit.data_input].dtype == tf.quint8 if unit.data_input in self.quantized
                    else self.ranges[unit.data_input][0] >= 0)
        if unit.kind == "matmul":
            return unsigned and unit.activation in ("", "Relu")  # the public ops fuse no other activation
        anchor = self.nodes[unit.anchor]
        depthwise_without_relu = anchor.op == "DepthwiseConv2dNative" and not unit.activation
        return unsigned and not depthwise_without_relu and anchor.attr["padding"].s != b"EXPLICIT"

    def _grouped(self, unit: Unit) -> bool:
        """Whether ``unit`` is a grouped Conv2D (its filter reads fewer channels than its input has, as a grouped
        Keras Conv2D inlined from its function call): oneDNN has no int8 kernel for it, so it stays fp32."""
        anchor = self.nodes[unit.anchor]
        if anchor.op != "Conv2D":
            return False
        shape = self.shapes.of(unit.data_input)
        channels = shape[1 if anchor.attr["data_format"].s == b"NCHW" else -1] if shape else None
        return channels is not None and channels != _const_value(self.nodes[unit.weights]).shape[2]

    def _sum_supported(self, unit: Unit) -> bool:
        """oneDNN fuses [BiasAdd, Sum, Relu, Requantize] and computes it right only for an unsigned summand: a
        quint8 one (shifted codes too) or an fp32 one, which gets a QuantizeV2 of its own. The conv writes into
        the summand's buffer, so it must not be the conv's own input (x + conv(x): TensorFlow crashed)."""
        if self.options.kernels != "onednn" or self.nodes[unit.anchor].op != "Conv2D":
            return False
        summand = self.quantized.get(unit.summand)
        # without an activation a signed output must be shifted (see _output_range), which every reader must take
        linear_ok = bool(unit.activation) or self.ranges[unit.output_tensor][0] >= 0 or self._can_shift(unit.output_tensor)
        return ((summand is None or summand.dtype == tf.quint8) and linear_ok and unit.summand != unit.data_input
                and not self._summand_read_after(unit))

    def _summand_read_after(self, unit: Unit) -> bool:
        """Whether a node that depends on the residual Add also reads its summand: the fused conv overwrites the
        summand's buffer (see ``_summand_readers_first``), so such a reader could not run before it."""
        add = unit.nodes[unit.nodes.index(unit.pre_sum) + 1]
        readers = {n.name for n in self.consumers.get(node_name(unit.summand), [])} - {add}
        return any(add in ancestors(self.nodes, [reader]) for reader in readers)

    def _input(self, tensor: str, reader: Unit | None) -> QTensor:
        """The int8 form of ``tensor`` for ``reader`` (None: a summand): an int8 op's output, or a QuantizeV2 with
        the calibrated range. A signed fp32 tensor gets a shifted form for readers that take one, a qint8 one
        for the others (two QuantizeV2 when its readers differ)."""
        if tensor in self.quantized:
            return self.quantized[tensor]
        lo, hi = self.ranges[tensor]
        shift = _zero_exact(lo, hi) if lo < 0 and self._reader_can_shift(reader) else None
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
            dtype, mode, bound = tf.qint8, "SCALED", _qint8_bound(lo, hi)
            lo, hi = -bound, bound
        self.new_nodes.extend([N.const(f"{base}/min", np.float32(lo)), N.const(f"{base}/max", np.float32(hi)),
                               N.quantize_v2(base, source, f"{base}/min", f"{base}/max", dtype, mode)])
        self.entries[tensor, shift] = QTensor(f"{base}:0", f"{base}:1", f"{base}:2", dtype, mode, shift)
        return self.entries[tensor, shift]

    def _before_clamp(self, tensor: str, high: float) -> str:
        """The input of the Relu (or Relu6 with ``high`` <= 6) producing ``tensor``, else ``tensor``: a quint8 QuantizeV2
        to [0, high] saturates what the Relu would clamp, so the Relu need not run (it is pruned when no fp32 op reads it)."""
        producer = self.nodes.get(node_name(tensor))
        if producer is None or not tensor.endswith(":0") or not (
                producer.op == "Relu" or (producer.op == "Relu6" and high <= 6.0)):
            return tensor
        return tensor_name(producer.input[0])

    def _can_shift(self, tensor: str) -> bool:
        """Whether every int8 reader of ``tensor`` can take it shifted to unsigned."""
        return self.options.kernels == "onednn" and all(map(self._reader_can_shift, self.readers.get(tensor, ())))

    def _reader_can_shift(self, reader: Unit | None) -> bool:
        """Whether ``reader`` can take its input shifted to unsigned: a MatMul, a conv that does not pad, a
        summand (None: read as unsigned data, with low added to the bias), or a pool/reshape whose own readers
        can; never with the public kernels.

        Without VNNI oneDNN halves the weights of a convolution with a signed input (``sa0.5`` in its
        verbose log); an unsigned input keeps all 8 bits. The kernel's zero padding would stand for ``low``,
        so a convolution that pads keeps a signed input (padding the codes with TF's PadV2 was tried:
        on fer it cost 4 ms per batch of 32, more than the int8 convolutions saved).
        """
        if self.options.kernels != "onednn":
            return False
        if reader is None:
            return True
        if reader.kind == "conv":
            return not _pads(self.nodes[reader.anchor], _const_value(self.nodes[reader.weights]).shape)
        if reader.kind == "ConcatV2":
            return False
        return reader.kind == "matmul" or self._can_shift(reader.output_tensor)

    def _pair_safe(self, x: QTensor) -> bool:
        return self.options.pair_safe_weights and x.dtype == tf.quint8

    def _output_range(self, unit: Unit) -> tuple[float, float, tf.DType, tuple | None]:
        """(min, max, dtype, shift) of a requantized output: quint8 [0, M] when non-negative; else, when its
        readers allow, quint8 codes of x - low in [0, high - low] (``shift`` = (low, high)); else qint8 [-M, M].

        A residual sum without an activation is fused only when its output can be shifted: the kernel computes
        Relu(conv + summand - low), which is x - low wherever x is in range (oneDNN fuses a sum only with an
        activation after it). A linear output is shifted through its bias; one after a signed activation (a
        MatMul's Tanh, Elu or LeakyRelu) by the kernel's MIN_FIRST requantize (see ``_matmul``)."""
        lo, hi = self.ranges[unit.output_tensor]
        if unit.activation == "Relu6":
            hi = min(hi, 6.0)  # Relu6 is Relu with the quantized range capped at 6
        if unit.activation in NON_NEGATIVE_ACTIVATIONS or lo >= 0:
            return 0.0, max(hi, MIN_RANGE_WIDTH), tf.quint8, None
        if self._can_shift(unit.output_tensor):
            shift = _zero_exact(lo, hi)
            return 0.0, shift[1] - shift[0], tf.quint8, shift
        bound = _qint8_bound(lo, hi)
        return -bound, bound, tf.qint8, None

    def _shifted_output(self, base: str, scope: str, dtype, shift) -> QTensor:
        """The QTensor of op ``base``'s output; a shifted one gets constants holding its float range for its readers."""
        if shift is None:
            return QTensor(f"{base}:0", f"{base}:1", f"{base}:2", dtype)
        self.new_nodes.extend([N.const(f"{scope}/low", np.float32(shift[0])), N.const(f"{scope}/high", np.float32(shift[1]))])
        return QTensor(f"{base}:0", f"{scope}/low", f"{scope}/high", dtype, "MIN_FIRST", shift)

    def _const_scope(self) -> str:
        """A short, unique name scope for one op's constants (long node names made a third of fer's int8 file)."""
        self.scopes += 1
        return f"kquant/{self.scopes}"

    def _conv(self, unit: Unit) -> QTensor:
        anchor = self.nodes[unit.anchor]
        x = self._input(unit.data_input, unit)
        weights = _const_value(self.nodes[unit.weights])
        depthwise = anchor.op == "DepthwiseConv2dNative"
        channels = weights.shape[2] * weights.shape[3] if depthwise else weights.shape[3]
        q_weights, w_max = _quantize_weights(weights, self.options.per_channel, depthwise,
                                             pair_safe=self._pair_safe(x) and not depthwise)
        lo, hi, dtype, out_shift = self._output_range(unit)
        base, k = f"{unit.output}_int8", self._const_scope()
        bias = self._bias(unit, channels) - (out_shift[0] if out_shift else 0.0)  # shifted output codes hold x - low
        conv_attrs = {key: anchor.attr[key] for key in CONV_ATTRS if key in anchor.attr}
        filter_nodes = (_strided_filter(k, q_weights, conv_attrs)
                        if self.options.kernels == "onednn" and _strided_1x1(anchor, weights.shape)
                        else [N.const(f"{k}/filter", q_weights, tf.qint8)])
        x_min, x_max = x.min, x.max
        if x.shift:  # the kernel reads x - low in [0, high - low]; add back low * (the weights it uses) per channel
            x_min, x_max = f"{k}/min_input", f"{k}/max_input"
            self.new_nodes.extend([N.const(x_min, np.float32(0.0)), N.const(x_max, np.float32(x.shift[1] - x.shift[0]))])
            bias = bias + x.shift[0] * dequantized_weights(q_weights, w_max, channels).sum(axis=0)
        # one range constant serves as min and max: the kernels scale by max(|min|, |max|) per channel
        inputs = [x.tensor, f"{k}/filter", f"{k}/bias", x_min, x_max, f"{k}/filter_range", f"{k}/filter_range",
                  f"{k}/min_output", f"{k}/max_output"]
        if unit.summand:
            summand = self._input(unit.summand, None)
            s_min, s_max = summand.min, summand.max
            if summand.shift:  # the kernel adds the codes as unsigned data, x - low: add low back
                s_min, s_max = f"{k}/min_summand", f"{k}/max_summand"
                self.new_nodes.extend([N.const(s_min, np.float32(0.0)),
                                       N.const(s_max, np.float32(summand.shift[1] - summand.shift[0]))])
                bias = bias + summand.shift[0]
            op = N.fused_quantized_conv_with_sum(
                base, CONV_OP_NAMES[anchor.op],
                inputs[:3] + [summand.tensor] + inputs[3:7] + [s_min, s_max] + inputs[7:],
                input_dtype=x.dtype, summand_dtype=summand.dtype, output_dtype=dtype, relu=True, conv_attrs=conv_attrs)
        elif self.options.kernels == "public":
            op = N.public_quantized_conv(base, depthwise, bool(unit.activation), inputs, output_dtype=dtype,
                                         conv_attrs={k: conv_attrs[k] for k in PUBLIC_CONV_ATTRS if k in conv_attrs})
        else:
            op = N.fused_quantized_conv(
                base, CONV_OP_NAMES[anchor.op], inputs, input_dtype=x.dtype, output_dtype=dtype,
                fused_ops=["BiasAdd"] + (["Relu"] if unit.activation else []) + ["Requantize"], conv_attrs=conv_attrs)
        self.new_nodes.extend([
            *filter_nodes, N.const(f"{k}/bias", bias.astype(np.float32)),
            N.const(f"{k}/filter_range", w_max),
            N.const(f"{k}/min_output", np.float32(lo)), N.const(f"{k}/max_output", np.float32(hi)), op])
        return self._shifted_output(base, k, dtype, out_shift)

    def _matmul(self, unit: Unit, to_float: bool = False) -> QTensor | None:
        """``_QuantizedMatMul``; with ``to_float`` (read only by fp32 ops) it dequantizes inside the kernel."""
        x = self._input(unit.data_input, unit)
        weights = _const_value(self.nodes[unit.weights])
        q_weights, w_max = _quantize_weights(weights, per_channel=False, depthwise=False, pair_safe=self._pair_safe(x))
        base, k = f"{unit.output}_int8", self._const_scope()
        lo, hi, dtype, out_shift = self._output_range(unit)
        # a linear output is shifted through the bias; after an activation the kernel requantizes MIN_FIRST to [low, high]
        output_mode = "MIN_FIRST" if out_shift and unit.activation and not to_float else "SCALED"
        if output_mode == "MIN_FIRST":
            lo, hi = out_shift
        bias = self._bias(unit, weights.shape[1]) - (out_shift[0] if out_shift and output_mode == "SCALED" and not to_float
                                                     else 0.0)
        self.new_nodes.extend([N.const(f"{k}/weights", q_weights, tf.qint8), N.const(f"{k}/bias", bias.astype(np.float32)),
                               N.const(f"{k}/weights_range", w_max)])
        inputs = [x.tensor, f"{k}/weights", f"{k}/bias", x.min, x.max, f"{k}/weights_range", f"{k}/weights_range"]
        if self.options.kernels == "public":
            return self._public_matmul(unit, x, base, k, inputs, to_float)
        fused = ["BiasAdd"] + ([unit.activation] if unit.activation else [])
        alpha = self.nodes[unit.output].attr["alpha"].f if unit.activation == "LeakyRelu" else None
        if to_float:
            self.new_nodes.append(N.quantized_matmul(unit.output, inputs, input_dtype=x.dtype, output_dtype=tf.float32,
                                                     fused_ops=fused + ["Dequantize"], input_mode=x.mode, leakyrelu_alpha=alpha))
            return None
        self.new_nodes.extend([
            N.const(f"{k}/min_output", np.float32(lo)), N.const(f"{k}/max_output", np.float32(hi)),
            N.quantized_matmul(base, inputs + [f"{k}/min_output", f"{k}/max_output"], input_dtype=x.dtype,
                               output_dtype=dtype, fused_ops=fused + ["Requantize"], input_mode=x.mode,
                               output_mode=output_mode, leakyrelu_alpha=alpha)])
        return self._shifted_output(base, k, dtype, out_shift)

    def _public_matmul(self, unit, x, base, scope, inputs, to_float):
        """The public MatMul ops always take an output range, even when they dequantize."""
        lo, hi, dtype, _ = self._output_range(unit)  # public kernels never shift
        self.new_nodes.extend([N.const(f"{scope}/min_output", np.float32(lo)), N.const(f"{scope}/max_output", np.float32(hi))])
        inputs = inputs + [f"{scope}/min_output", f"{scope}/max_output"]
        name = unit.output if to_float else base
        self.new_nodes.append(N.public_quantized_matmul(name, inputs, input_dtype=x.dtype,
                                                        output_dtype=tf.float32 if to_float else dtype,
                                                        relu=bool(unit.activation), input_mode=x.mode))
        return None if to_float else QTensor(f"{base}:0", f"{base}:1", f"{base}:2", dtype)

    def _pass_through(self, unit: Unit) -> QTensor:
        """Pools and Reshape keep their input's int8 encoding and range."""
        node = self.nodes[unit.anchor]
        x = self._input(unit.data_input, unit)
        base = f"{unit.output}_int8"
        if node.op == "Reshape":
            op = N.make_node("QuantizedReshape", base, [x.tensor, node.input[1], x.min, x.max], T=x.dtype,
                             Tshape=tf.as_dtype(node.attr["Tshape"].type))
        else:
            op = N.make_node(f"Quantized{node.op}", base, [x.tensor, x.min, x.max], T=x.dtype)
            for key in ("ksize", "strides", "padding"):
                op.attr[key].CopyFrom(node.attr[key])
        self.new_nodes.append(op)
        return dataclasses.replace(x, tensor=f"{base}:0", min=f"{base}:1", max=f"{base}:2")  # a shift carries over

    def _concat(self, unit: Unit) -> QTensor:
        """``QuantizedConcat`` of unsigned inputs (fp32 ones through a QuantizeV2): its output range is the union of
        theirs (here [0, max])."""
        sources = [self._input(t, unit) for t in unit.data_inputs]
        base, k = f"{unit.output}_int8", self._const_scope()
        self.new_nodes.extend([
            N.const(f"{k}/axis", np.int32(self._concat_axis(unit))),
            N.make_node("QuantizedConcat", base, [f"{k}/axis", *(s.tensor for s in sources), *(s.min for s in sources),
                                                  *(s.max for s in sources)], N=len(sources), T=tf.quint8)])
        return QTensor(f"{base}:0", f"{base}:1", f"{base}:2", tf.quint8)

    def _concat_axis(self, unit: Unit) -> int | None:
        """The ConcatV2's axis counted from the front (QuantizedConcat takes no negative one); None if the rank is unknown."""
        axis = int(_const_value(self.nodes[node_name(self.nodes[unit.anchor].input[-1])]))
        if axis >= 0:
            return axis
        shape = self.shapes.of(unit.output_tensor)
        return None if shape is None else axis + len(shape)

    def _bias(self, unit: Unit, channels: int) -> np.ndarray:
        if not unit.bias:
            return np.zeros(channels, np.float32)
        return _const_value(self.nodes[unit.bias]).astype(np.float32).reshape(channels)


_EMITTERS = {"conv": _Rewriter._conv, "matmul": _Rewriter._matmul, "MaxPool": _Rewriter._pass_through,
             "AvgPool": _Rewriter._pass_through, "Reshape": _Rewriter._pass_through, "ConcatV2": _Rewriter._concat}


def _summand_readers_first(graph_def):
    """``graph_def`` with every other reader of a fused sum's summand made to run before that conv (control edges).

    oneDNN's sum post-op accumulates into the summand's buffer, which TensorFlow hands to the conv as its
    output; when another op still holds that buffer, the conv crashed TensorFlow (segfault), e.g. with a
    Dequantize of the summand for an fp32 reader or a graph output that nothing ordered before it.
    """
    nodes = nodes_by_name(graph_def)
    readers = {}
    for node in graph_def.node:
        for tensor in node.input:
            if not is_control_input(tensor):
                readers.setdefault(tensor_name(tensor), []).append(node.name)
    for node in graph_def.node:
        if "fused_ops" in node.attr and b"Sum" in node.attr["fused_ops"].list.s:  # reading attr[...] would add it
            unordered = set(readers[tensor_name(node.input[3])]) - ancestors(nodes, [node.name])  # itself among them
            node.input.extend(f"^{r}" for r in sorted(unordered))
    return graph_def


def _quantize_weights(weights: np.ndarray, per_channel: bool, depthwise: bool, pair_safe: bool = False):
    """Symmetric int8 weights (per output channel or per tensor); returns (q, max) with q * max / 127 ~ weights.

    ``pair_safe`` scales by the largest same-sign sum of an input-channel pair (2k, 2k+1) instead of the
    largest magnitude, so |q_2k + q_2k+1| <= 128 and 255 * 128 fits the int16 sum oneDNN forms without VNNI.
    """
    channels = weights.shape[2] * weights.shape[3] if depthwise else weights.shape[-1]
    magnitude = _pair_sums(weights) if pair_safe else np.abs(weights)
    w_max = magnitude.reshape(-1, channels).max(axis=0) if per_channel else np.asarray(magnitude.max())
    # A dead channel (weights ~1e-33 after batch-norm folding) would get a scale so large that the kernel's
    # int32 bias overflows; a floor relative to the largest channel keeps every scale sane.
    w_max = np.maximum(w_max, max(float(np.max(w_max)) * 1e-3, 1e-8)).astype(np.float32)
    flat = weights.reshape(-1, channels) if per_channel else weights.reshape(-1, 1)
    q = np.clip(np.round(flat / w_max * 127), -127, 127).astype(np.int8).reshape(weights.shape)
    return q, w_max


def dequantized_weights(q: np.ndarray, w_max, channels: int) -> np.ndarray:
    """The float values int8 weights stand for, as [taps * inputs, channels] (``w_max`` per channel or one)."""
    return q.astype(np.float64).reshape(-1, channels) * (w_max / 127.0)


def _pair_sums(weights: np.ndarray) -> np.ndarray:
    """For weights [..., in, out]: per pair of input channels (2k, 2k+1), the larger of its positive and negative sums.

    Rounding adds at most 1 to a pair scaled to 127, so the quantized pair stays within 128.
    """
    if weights.shape[-2] % 2:
        weights = np.concatenate([weights, np.zeros_like(weights[..., :1, :])], axis=-2)
    pairs = weights.reshape(*weights.shape[:-2], weights.shape[-2] // 2, 2, weights.shape[-1])
    return np.maximum(np.maximum(pairs, 0).sum(axis=-2), np.maximum(-pairs, 0).sum(axis=-2))


def _zero_exact(low: float, high: float) -> tuple[float, float]:
    """[low, high] moved by under half a step so that 0.0 is one of its 256 codes (zero padding stays exact)."""
    step = max(high - low, MIN_RANGE_WIDTH) / 255.0
    zero_code = min(max(round(-low / step), 0), 255)
    return -zero_code * step, (255 - zero_code) * step


def _qint8_bound(low: float, high: float) -> float:
    """The symmetric qint8 range [-bound, bound] of [low, high] (no larger floor: a range of 1e-8 keeps its 8 bits)."""
    return max(-low, high, MIN_RANGE_WIDTH)


def _pads(conv, kernel_shape) -> bool:
    """Whether ``conv`` pads its input with zeros: SAME with a kernel larger than 1x1, or explicit pads."""
    padding = conv.attr["padding"].s
    if padding == b"EXPLICIT":
        return any(conv.attr["explicit_paddings"].list.i)
    return padding == b"SAME" and tuple(kernel_shape[:2]) != (1, 1)


def _strided_1x1(conv, kernel_shape) -> bool:
    strides = list(conv.attr["strides"].list.i)
    return (conv.op == "Conv2D" and tuple(kernel_shape[:2]) == (1, 1) and conv.attr["padding"].s in (b"SAME", b"VALID")
            and conv.attr["data_format"].s in (b"", b"NHWC") and strides[1:3] != [1, 1])


def _strided_filter(scope: str, q_weights: np.ndarray, conv_attrs: dict) -> list:
    """A strided 1x1 conv's filter as an s x s kernel with the weights in its first tap; the conv is padded by
    s - 1 at the end (``conv_attrs`` is updated), so its output size stays ceil(size / s) and the padded
    values meet only zero weights. The file keeps the 1x1 weights: the Pad is folded when the graph loads.

    oneDNN's strided int8 1x1 kernel (jit_uni_int8_1x1, which first copies the strided input to a
    scratchpad) gave different results on repeated runs of one batch here (fer's first residual
    branch, 60x60x8 input: up to 116 codes off in the second half of a batch of 100); the general int8
    conv kernel is stable.
    """
    strides = list(conv_attrs["strides"].list.i)
    conv_attrs["padding"] = N.attr_value("EXPLICIT")
    conv_attrs["explicit_paddings"] = N.attr_value([0, 0, 0, strides[1] - 1, 0, strides[2] - 1, 0, 0])
    pads = np.array([[0, strides[1] - 1], [0, strides[2] - 1], [0, 0], [0, 0]], np.int32)
    return [N.const(f"{scope}/filter_1x1", q_weights, tf.qint8), N.const(f"{scope}/filter_pads", pads),
            N.make_node("Pad", f"{scope}/filter", [f"{scope}/filter_1x1", f"{scope}/filter_pads"], T=tf.qint8,
                        Tpaddings=tf.int32)]


def _with_explicit_padding(conv, paddings):
    """A copy of the VALID ``conv`` with the Const ``paddings`` (4 x 2, of a Pad before it) as padding="EXPLICIT"."""
    padded = type(conv)()
    padded.CopyFrom(conv)
    padded.attr["padding"].s = b"EXPLICIT"
    padded.attr["explicit_paddings"].list.i[:] = [int(v) for v in _const_value(paddings).reshape(-1)]
    return padded


def _const_value(node) -> np.ndarray:
    return tensor_util.MakeNdarray(node.attr["value"].tensor)
