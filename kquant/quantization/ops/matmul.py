"""MatMul -> ``_QuantizedMatMul`` (bias, an activation or a GELU, and the requantize or dequantize fused) or the
public ``QuantizedMatMulWithBias[AndRelu]And{Requantize,Dequantize}``; weights per tensor."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import tensorflow as tf

from kquant.graphdef import tensor_name
from kquant.quantization import nodes as N
from kquant.quantization.encoding import QTensor
from kquant.quantization.ops import weighted
from kquant.quantization.ops.base import PlanGraph, Unit, is_scalar, only_read_inside
from kquant.quantization.weights import quantize_weights
from kquant.transforms.pattern import P, match_at

ACTIVATIONS = "Relu|Relu6|Sigmoid|Tanh|Elu|LeakyRelu"  # what oneDNN's int8 inner product fuses

# TensorFlow's GELU of x (tf.nn.gelu, which Keras's gelu runs), fused as the kernel's GeluExact / GeluApproximate:
# exact 0.5 x * erfc(-x / sqrt 2); approximate 0.5 x * (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
_HALF = P("Mul", "half", P("*", "x_half"), P("Const", "c_half"), commutative=True)
GELU_FORMS = {
    "GeluExact": (P("Mul", "gelu", _HALF, P("Erfc", P("Mul", P("Neg", P("*", "x_neg")), P("Const", "c_erf"),
                                                         commutative=True)), commutative=True),
                  {"c_half": 0.5, "c_erf": 2 ** -0.5}),
    "GeluApproximate": (
        P("Mul", "gelu", _HALF, P("AddV2", P("Tanh", P("Mul", P("AddV2", P("*", "x_inner"), P(
            "Mul", P("Pow", P("*", "x_pow"), P("Const", "c_three")), P("Const", "c_cubic"), commutative=True),
            commutative=True), P("Const", "c_sqrt"), commutative=True)), P("Const", "c_one"), commutative=True),
          commutative=True),
        {"c_half": 0.5, "c_three": 3.0, "c_cubic": 0.044715, "c_sqrt": math.sqrt(2 / math.pi), "c_one": 1.0}),
}


class MatMul(weighted.WeightedQuantizer):
    family = "matmul"
    op_types = ("MatMul",)
    patterns = weighted.chain_patterns("MatMul", ACTIVATIONS, residual=False)

    def accepts_anchor(self, node) -> bool:
        return not (node.attr["transpose_a"].b or node.attr["transpose_b"].b)

    def match(self, node, graph: PlanGraph) -> Unit | None:
        unit = super().match(node, graph)
        if unit is None or unit.activation or graph.index.only_reader(unit.output) is not None:
            return unit
        gelu = _gelu(graph.index.by_name[unit.output], graph.index)
        if gelu is None:
            return unit
        activation, match = gelu
        inner = tuple(n.name for n in match.matched if n.op != "Const")
        return dataclasses.replace(unit, nodes=unit.nodes + inner, output=match.root.name, activation=activation)

    def supported(self, unit: Unit, lowering) -> bool:
        """The public ops take an unsigned input and fuse only Relu."""
        return lowering.options.kernels == "onednn" or (lowering.unsigned(unit.data_input) and unit.activation in ("", "Relu"))

    def reads_shifted(self, unit: Unit, lowering) -> bool:
        return True

    def lower(self, unit: Unit, lowering) -> QTensor | None:
        """``_QuantizedMatMul``; read only by fp32 ops, it dequantizes inside the kernel (no public Relu+Dequantize op)."""
        to_float = unit.output_tensor not in lowering.read_as_int8 and (
            lowering.options.kernels == "onednn" or not unit.activation)
        x = lowering.input(unit.data_input, unit)
        weights = weighted.weights_of(unit, lowering)
        q_weights, w_max = quantize_weights(weights, weights.shape[1], per_channel=False, pair_safe=lowering.pair_safe(x))
        base, k = f"{unit.output}_int8", lowering.const_scope()
        lo, hi, dtype, out_shift = weighted.output_range(unit, lowering)
        # a linear output is shifted through the bias; after an activation the kernel requantizes MIN_FIRST to [low, high]
        output_mode = "MIN_FIRST" if out_shift and unit.activation and not to_float else "SCALED"
        if output_mode == "MIN_FIRST":
            lo, hi = out_shift
        shifted_by_bias = out_shift and output_mode == "SCALED" and not to_float
        bias = weighted.bias(unit, lowering, weights.shape[1]) - (out_shift[0] if shifted_by_bias else 0.0)
        lowering.emit(N.const(f"{k}/weights", q_weights, tf.qint8), N.const(f"{k}/bias", bias.astype(np.float32)),
                      N.const(f"{k}/weights_range", w_max))
        inputs = [x.tensor, f"{k}/weights", f"{k}/bias", x.min, x.max, f"{k}/weights_range", f"{k}/weights_range"]
        if lowering.options.kernels == "public":
            return _public(unit, x, base, k, inputs, to_float, lowering)
        fused = ["BiasAdd"] + ([unit.activation] if unit.activation else [])
        alpha = lowering.nodes[unit.output].attr["alpha"].f if unit.activation == "LeakyRelu" else None
        if to_float:
            lowering.emit(_quantized_matmul(unit.output, inputs, input_dtype=x.dtype, output_dtype=tf.float32,
                                            fused_ops=fused + ["Dequantize"], input_mode=x.mode, leakyrelu_alpha=alpha))
            return None
        lowering.emit(
            N.const(f"{k}/min_output", np.float32(lo)), N.const(f"{k}/max_output", np.float32(hi)),
            _quantized_matmul(base, inputs + [f"{k}/min_output", f"{k}/max_output"], input_dtype=x.dtype,
                              output_dtype=dtype, fused_ops=fused + ["Requantize"], input_mode=x.mode,
                              output_mode=output_mode, leakyrelu_alpha=alpha))
        return lowering.shifted_output(base, k, dtype, out_shift)

    def qdq(self, unit: Unit, points) -> None:
        points.round_weights(unit, per_channel=False, sums_pairs=True)
        if unit.output_tensor in points.read_as_int8:  # read only by fp32 ops, it dequantizes in its kernel, unrounded
            points.round(unit.output_tensor)
        points.enter(unit.data_input)


def _public(unit, x, base, scope, inputs, to_float, lowering):
    """The public MatMul ops always take an output range, even when they dequantize."""
    lo, hi, dtype, _ = weighted.output_range(unit, lowering)  # public kernels never shift
    lowering.emit(N.const(f"{scope}/min_output", np.float32(lo)), N.const(f"{scope}/max_output", np.float32(hi)))
    inputs = inputs + [f"{scope}/min_output", f"{scope}/max_output"]
    output_dtype = tf.float32 if to_float else dtype
    op = ("QuantizedMatMulWithBiasAndDequantize" if to_float
          else f"QuantizedMatMulWithBias{'AndRelu' if unit.activation else ''}AndRequantize")
    lowering.emit(N.make_node(op, unit.output if to_float else base, inputs, T1=x.dtype, T2=tf.qint8, Tbias=tf.float32,
                              Toutput=output_dtype, input_quant_mode=x.mode))
    return None if to_float else QTensor(f"{base}:0", f"{base}:1", f"{base}:2", dtype)


def _quantized_matmul(name, inputs, *, input_dtype, output_dtype, fused_ops, input_mode, output_mode="SCALED",
                      leakyrelu_alpha=None):
    """``_QuantizedMatMul``: inputs a, b, bias, min_a, max_a, min_b, max_b[, min_out, max_out]. With a trailing
    ``Dequantize`` fused op the output is float32 and single; else ``output_mode`` SCALED or MIN_FIRST (codes of
    x - min_out) requantizes it."""
    dequantized = fused_ops[-1] == "Dequantize"
    node = N.make_node(
        "_QuantizedMatMul", name, inputs,
        Thost_inputs=[input_dtype, tf.qint8, tf.float32] + [tf.float32] * (len(inputs) - 3),
        Thost_outputs=[tf.float32] if dequantized else [output_dtype, tf.float32, tf.float32],
        Tdevice_inputs=[], Tdevice_outputs=[], T1=input_dtype, T2=tf.qint8, Tbias=tf.float32, Tout=output_dtype,
        U=tf.float32, fused_ops=list(fused_ops), input_quant_mode=input_mode, transpose_a=False, transpose_b=False)
    if not dequantized:
        node.attr["output_quant_mode"].CopyFrom(N.attr_value(output_mode))
    if leakyrelu_alpha is not None:
        node.attr["leakyrelu_alpha"].CopyFrom(N.attr_value(float(leakyrelu_alpha)))
    return node


def _gelu(x, index):
    """(the kernel's GELU name, its match) when the readers of ``x`` are TensorFlow's GELU of it and nothing
    else reads inside it; else None."""
    readers = [index.by_name[name] for name in index.consumers(x.name)]
    for half in (r for r in readers if r.op == "Mul"):
        root = index.only_reader(half.name)
        for activation, (pattern, constants) in GELU_FORMS.items():
            match = match_at(pattern, root, index) if root is not None else None
            if (match is not None and match.nodes["half"] is half
                    and all(tensor_name(t) == f"{x.name}:0" for label, t in match.tensors.items() if label.startswith("x_"))
                    and all(is_scalar(index, match.nodes[label], value) for label, value in constants.items())
                    and only_read_inside(match, index, x)):
                return activation, match
    return None
