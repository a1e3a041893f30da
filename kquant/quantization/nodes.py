"""NodeDef construction: typed attributes, constants, and the int8 ops kquant emits.

Every builder returns NodeDefs; nothing here runs a graph. Attribute names and input order
follow TensorFlow's op registrations (public ``Quantize*`` ops and the oneDNN-only
``_FusedQuantized*`` / ``_QuantizedMatMul`` ops).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import attr_value_pb2, node_def_pb2

from kquant.graph import const_node as const  # noqa: F401  (builders here and N.const in the rewrite)


def attr_value(value) -> attr_value_pb2.AttrValue:
    """A Python value as an AttrValue: DType, bool, int, float, str/bytes, or a list of one of those."""
    if isinstance(value, attr_value_pb2.AttrValue):
        return value
    if isinstance(value, tf.DType):
        return attr_value_pb2.AttrValue(type=value.as_datatype_enum)
    if isinstance(value, bool):
        return attr_value_pb2.AttrValue(b=value)
    if isinstance(value, int):
        return attr_value_pb2.AttrValue(i=value)
    if isinstance(value, float):
        return attr_value_pb2.AttrValue(f=value)
    if isinstance(value, (str, bytes)):
        return attr_value_pb2.AttrValue(s=value.encode() if isinstance(value, str) else value)
    values = list(value)
    listed = attr_value_pb2.AttrValue.ListValue()
    if all(isinstance(v, tf.DType) for v in values):
        listed.type.extend(v.as_datatype_enum for v in values)
    elif all(isinstance(v, (str, bytes)) for v in values):
        listed.s.extend(v.encode() if isinstance(v, str) else v for v in values)
    elif all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        listed.i.extend(int(v) for v in values)
    else:
        listed.f.extend(float(v) for v in values)
    return attr_value_pb2.AttrValue(list=listed)


def make_node(op: str, name: str, inputs=(), **attrs) -> node_def_pb2.NodeDef:
    node = node_def_pb2.NodeDef(name=name, op=op, input=list(inputs))
    for key, value in attrs.items():
        node.attr[key].CopyFrom(attr_value(value))
    return node


def quantize_v2(name: str, tensor: str, min_name: str, max_name: str, dtype: tf.DType, mode: str) -> node_def_pb2.NodeDef:
    """fp32 -> int8 with a frozen range; outputs (q, min, max).

    The attributes keep TensorFlow's portable kernel: with oneDNN on, TF swaps in _MklQuantizeV2 for
    SCALED + HALF_TO_EVEN and MIN_FIRST + HALF_AWAY_FROM_ZERO without narrow_range, and that kernel costs
    about 200 us per call here whatever the tensor size (the portable one 6-14 us on small tensors,
    no slower on large ones); its qint8 codes were also one off the exact rounding for 30 % of values.
    The portable kernel's codes are the exact rounding: quint8 SCALED with HALF_AWAY_FROM_ZERO (same
    codes as oneDNN's), qint8 SCALED narrow to [-127, 127] (the range the int8 kernels read), and
    MIN_FIRST on ranges where 0.0 is a code (the rewrite's shifted ranges).

    ``ensure_minimum_range`` is 0, not TF's 0.01: calibrated ranges already have a non-zero width,
    and widening a range of 1e-8 to 0.01 would round every value to 0.
    """
    portable = {"round_mode": "HALF_AWAY_FROM_ZERO"} if (mode, dtype) == ("SCALED", tf.quint8) else {"narrow_range": True}
    if mode == "MIN_FIRST":
        portable["round_mode"] = "HALF_AWAY_FROM_ZERO"  # the only rounding MIN_FIRST takes
    return make_node("QuantizeV2", name, [tensor, min_name, max_name], T=dtype, mode=mode, ensure_minimum_range=0.0,
                     **{"round_mode": "HALF_TO_EVEN", **portable})


def dequantize(name: str, tensor: str, min_tensor: str, max_tensor: str, dtype: tf.DType, mode: str) -> node_def_pb2.NodeDef:
    """int8 -> fp32. quint8 SCALED [0, M] is dequantized as MIN_FIRST, the same values, because TF runs
    MIN_FIRST with its portable kernel (2-9 us a call here) and SCALED with oneDNN's (120-200 us)."""
    if (mode, dtype) == ("SCALED", tf.quint8):
        mode = "MIN_FIRST"
    return make_node("Dequantize", name, [tensor, min_tensor, max_tensor], T=dtype, mode=mode, dtype=tf.float32)


def fused_quantized_conv(name: str, op: str, inputs, *, input_dtype, output_dtype, fused_ops, conv_attrs) -> node_def_pb2.NodeDef:
    """``_FusedQuantizedConv2D`` / ``_FusedQuantizedDepthwiseConv2D``.

    ``inputs``: x, filter, bias, min_x, max_x, min_filter, max_filter[, min_out, max_out].
    ``output_dtype`` quint8/qint8 with a trailing ``Requantize`` fused op, qint32 otherwise.
    """
    host_inputs = [input_dtype, tf.qint8, tf.float32] + [tf.float32] * (len(inputs) - 3)
    node = make_node(
        op, name, inputs,
        Thost_inputs=host_inputs, Thost_outputs=[output_dtype, tf.float32, tf.float32],
        Tdevice_inputs=[], Tdevice_outputs=[],
        Tinput=input_dtype, Tfilter=tf.qint8, Tbias=tf.float32, Tsummand=output_dtype, out_type=output_dtype,
        fused_ops=list(fused_ops),
    )
    for key, value in conv_attrs.items():
        node.attr[key].CopyFrom(value)
    return node


def quantized_matmul(name: str, inputs, *, input_dtype, output_dtype, fused_ops, input_mode: str, output_mode="SCALED",
                     leakyrelu_alpha=None, transpose_a=False, transpose_b=False) -> node_def_pb2.NodeDef:
    """``_QuantizedMatMul``: inputs a, b, bias, min_a, max_a, min_b, max_b[, min_out, max_out].

    With a trailing ``Dequantize`` fused op the output is float32 and has one output; else ``output_mode``
    SCALED or MIN_FIRST (codes of x - min_out) requantizes it.
    """
    dequantized = fused_ops[-1] == "Dequantize"
    host_outputs = [tf.float32] if dequantized else [output_dtype, tf.float32, tf.float32]
    node = make_node(
        "_QuantizedMatMul", name, inputs,
        Thost_inputs=[input_dtype, tf.qint8, tf.float32] + [tf.float32] * (len(inputs) - 3),
        Thost_outputs=host_outputs, Tdevice_inputs=[], Tdevice_outputs=[],
        T1=input_dtype, T2=tf.qint8, Tbias=tf.float32, Tout=output_dtype, U=tf.float32,
        fused_ops=list(fused_ops), input_quant_mode=input_mode, transpose_a=transpose_a, transpose_b=transpose_b,
    )
    if not dequantized:
        node.attr["output_quant_mode"].CopyFrom(attr_value(output_mode))
    if leakyrelu_alpha is not None:
        node.attr["leakyrelu_alpha"].CopyFrom(attr_value(float(leakyrelu_alpha)))
    return node


def public_quantized_conv(name: str, depthwise: bool, relu: bool, inputs, *, output_dtype, conv_attrs) -> node_def_pb2.NodeDef:
    """The public ``Quantized[Depthwise]Conv2DWithBias[AndRelu]AndRequantize`` ops (quint8 input only)."""
    op = ("QuantizedDepthwiseConv2DWithBiasAndReluAndRequantize" if depthwise
          else f"QuantizedConv2DWithBias{'AndRelu' if relu else ''}AndRequantize")
    node = make_node(op, name, inputs, Tinput=tf.quint8, Tfilter=tf.qint8, Tbias=tf.float32, out_type=output_dtype)
    for key, value in conv_attrs.items():
        node.attr[key].CopyFrom(value)
    return node


def public_quantized_matmul(name: str, inputs, *, input_dtype, output_dtype, relu: bool, input_mode: str) -> node_def_pb2.NodeDef:
    """The public ``QuantizedMatMulWithBias[AndRelu]AndRequantize`` / ``...AndDequantize`` ops (9 inputs)."""
    if output_dtype == tf.float32:
        op = "QuantizedMatMulWithBiasAndDequantize"
    else:
        op = f"QuantizedMatMulWithBias{'AndRelu' if relu else ''}AndRequantize"
    return make_node(op, name, inputs, T1=input_dtype, T2=tf.qint8, Tbias=tf.float32, Toutput=output_dtype,
                     input_quant_mode=input_mode)


def fused_quantized_conv_with_sum(name: str, op: str, inputs, *, input_dtype, summand_dtype, output_dtype, relu: bool,
                                  conv_attrs) -> node_def_pb2.NodeDef:
    """``_FusedQuantizedConv2D`` adding an int8 summand before the activation (oneDNN's sum post-op).

    ``inputs``: x, filter, bias, summand, min_x, max_x, min_filter, max_filter, min_summand, max_summand,
    min_out, max_out.
    """
    node = make_node(
        op, name, inputs,
        Thost_inputs=[input_dtype, tf.qint8, tf.float32, summand_dtype] + [tf.float32] * 8,
        Thost_outputs=[output_dtype, tf.float32, tf.float32], Tdevice_inputs=[], Tdevice_outputs=[],
        Tinput=input_dtype, Tfilter=tf.qint8, Tbias=tf.float32, Tsummand=summand_dtype, out_type=output_dtype,
        fused_ops=["BiasAdd", "Sum"] + (["Relu"] if relu else []) + ["Requantize"],
    )
    for key, value in conv_attrs.items():
        node.attr[key].CopyFrom(value)
    return node
