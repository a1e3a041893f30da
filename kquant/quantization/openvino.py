"""OpenVINO IR from the QDQ export graph, and which runtime precision each int8 unit gets there.

OpenVINO's TensorFlow frontend reads FakeQuant ops and its CPU plugin runs a convolution or matmul between
FakeQuants in u8/i8 (its low-precision transformations). The frontend's layout passes drop the TF node names
of convolutions; the IR names each weighted op by the unit whose weights it reads, so the compiled model's
layers trace back to the units: through the weights' FakeQuant name (``qdq.WEIGHT_FAKE_QUANT``) where it
survives, else (a depthwise filter, reshaped and folded) through its int8 codes.
"""

from __future__ import annotations

import warnings

import numpy as np

from kquant.errors import MissingRuntimeError
from kquant.quantization.qdq import WEIGHT_FAKE_QUANT

INSTALL = 'pip install "kquant[openvino]"'
WEIGHTED_OPS = ("Convolution", "GroupConvolution", "MatMul")  # the ov.Model ops a conv / matmul unit becomes
INT8_PRECISIONS = ("u8", "i8")
DEQUANTIZED = "/DequantizationMultiply"


def import_openvino():
    """The openvino module, imported only when an export or a check needs it."""
    try:
        import openvino
    except ImportError as exc:
        raise MissingRuntimeError(f"exporting to OpenVINO needs the openvino package, which is not installed "
                                  f"({exc}); install it with: {INSTALL}") from exc
    return openvino


def convert(graph_def, frozen, weights):
    """``graph_def`` (the QDQ export graph of ``frozen``) as an ``ov.Model`` whose weighted ops are named by the
    anchors of ``weights`` (``qdq.RoundedWeights``, one per int8 convolution or matmul)."""
    ov = import_openvino()
    model = ov.convert_model(graph_def, output=list(frozen.output_names))
    unnamed = {w.anchor: w for w in weights}
    ops = [op for op in model.get_ops() if op.get_type_name() in WEIGHTED_OPS]
    for op in ops:
        anchor = _weights_scope(op.input_value(1).get_node())
        if anchor in unnamed:
            op.set_friendly_name(anchor)
            del unnamed[anchor]
    for op in ops:
        codes = _int8_codes(op.input_value(1).get_node())
        found = [w.anchor for w in unnamed.values() if codes is not None and _same_codes(codes, w.q)]
        if len(found) == 1:
            op.set_friendly_name(found[0])
            del unnamed[found[0]]
    return model


def _upstream(node, depth: int = 6):
    """``node`` and the nodes above it along first inputs: the dequantizing Multiply, Convert, Reshape, Unsqueeze."""
    for _ in range(depth):
        yield node
        if not node.get_input_size():
            return
        node = node.input_value(0).get_node()


def _weights_scope(node) -> str:
    """The anchor whose weight FakeQuant names a node above ``node`` (a weighted op's weights input), or ""."""
    for above in _upstream(node):
        for name in (n for output in above.outputs() for n in output.get_names()):
            if WEIGHT_FAKE_QUANT in name:
                return name.split(WEIGHT_FAKE_QUANT)[0]
    return ""


def _int8_codes(node):
    """The int8 constant above ``node`` (its FakeQuant folded by OpenVINO), or None."""
    for above in _upstream(node):
        if above.get_type_name() == "Constant" and above.get_element_type().get_type_name() in ("i8", "u8"):
            return above.get_data()
    return None


def _same_codes(codes, q) -> bool:
    """Whether two int8 filters hold the same codes in any layout (one code apart where OpenVINO rounds a tie)."""
    return codes.size == q.size and int(np.abs(np.sort(codes.astype(np.int16), axis=None)
                                               - np.sort(q.astype(np.int16), axis=None)).max()) <= 1


def runtime_precisions(model, anchors, device: str = "CPU") -> dict[str, str]:
    """Compile ``model`` (an ``ov.Model`` or an .xml path) for ``device``: anchor -> the runtime precision of the
    layer computing it ("" when no compiled layer computes it under that name)."""
    ov = import_openvino()
    compiled = ov.Core().compile_model(model if hasattr(model, "get_ops") else str(model), device)
    precision = {}
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        for name in info["originalLayersNames"].astype(str).split(","):
            # the low-precision passes rename a weighted op whose dequantization they move after it
            precision.setdefault(name.removesuffix(DEQUANTIZED), info["runtimePrecision"].astype(str))
    return {anchor: precision.get(anchor, "") for anchor in anchors}


def warn_unless_int8(precisions: dict[str, str], layers: dict | None = None) -> None:
    """One warning naming the units OpenVINO does not run in int8 (by their Keras layers, ``layers``, where known)."""
    layers = layers or {}
    slow = [f"{layers.get(anchor, anchor)} ({precision or 'not found'})" for anchor, precision in precisions.items()
            if precision not in INT8_PRECISIONS]
    if slow:
        warnings.warn(f"OpenVINO runs {len(slow)} of the {len(precisions)} int8 convolutions/matmuls in another "
                      f"precision: {', '.join(slow)}", stacklevel=3)
