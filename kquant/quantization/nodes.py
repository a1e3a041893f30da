"""NodeDef construction shared by every lowering: typed attributes, constants, and the QuantizeV2 / Dequantize at
the borders between fp32 and int8 (each op family builds its own int8 ops, in ``kquant.quantization.ops``).

Every builder returns NodeDefs; nothing here runs a graph. Attribute names and input order follow
TensorFlow's op registrations.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import attr_value_pb2, node_def_pb2

from kquant.graphdef import const_node as const  # noqa: F401  (N.const in every lowering)



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
