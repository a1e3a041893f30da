"""OpenVINO IR from the QDQ export graph, and which runtime precision each int8 unit gets there.

OpenVINO's TensorFlow frontend reads FakeQuant ops and its CPU plugin runs a convolution or matmul between
FakeQuants in u8/i8 (its low-precision transformations). The frontend's layout passes drop the TF node names
of convolutions; the IR names each weighted op by the unit whose weights it reads, so the compiled model's
layers trace back to the units: through the weights' FakeQuant name (``qdq.WEIGHT_FAKE_QUANT``) where it
survives, else (a depthwise filter, reshaped and folded) through its int8 codes.
"""

from __future__ import annotations

import dataclasses
import tempfile
import warnings
from pathlib import Path

import numpy as np

from kquant.errors import MissingRuntimeError, ModelFormatError, ModelInputError, ModelNotFoundError, first_line
from kquant.graph import TensorSpec
from kquant.quantization.qdq import WEIGHT_FAKE_QUANT, export_points

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


@dataclasses.dataclass(frozen=True)
class Lowered:
    """A plan as an OpenVINO model: the ``ov.Model`` and the anchors of its int8 convolutions and matmuls."""

    model: object
    anchors: tuple


def lower(fp32, units, ranges, options) -> Lowered:
    """The plan (``fp32`` graph, ``units`` as emitted, ``ranges``, RewriteOptions) as an OpenVINO model, through
    the QDQ export graph: what ``export(format="openvino")`` writes and ``target="openvino"`` runs."""
    points = export_points(fp32, units, ranges, options)
    return Lowered(convert(points.graph_def(), fp32, points.weights), tuple(w.anchor for w in points.weights))


def convert(graph_def, frozen, weights):
    """``graph_def`` (the QDQ export graph of ``frozen``) as an ``ov.Model`` whose weighted ops are named by the
    anchors of ``weights`` (``qdq.RoundedWeights``, one per int8 convolution or matmul)."""
    model = _read_graph_def(graph_def, frozen.output_names)
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


def _read_graph_def(graph_def, outputs):
    """``graph_def`` as an ``ov.Model`` whose outputs are ``outputs``: OpenVINO's TensorFlow frontend, then the passes
    ``ov.convert_model`` applies (MOC, FakeQuant weights stored as int8), as NNCF calls them. The same model as
    ``ov.convert_model``, a fifth of the time: that one also imports the graph into TensorFlow and builds
    pre-processing steps kquant never asks for."""
    ov = import_openvino()
    from openvino._offline_transformations import (apply_fused_names_cleanup, apply_moc_transformations,
                                                   compress_quantize_weights_transformation)

    frontend = ov.frontend.FrontEndManager().load_by_framework("tf")
    with tempfile.TemporaryDirectory(prefix="kquant-openvino-") as tmp:
        path = Path(tmp) / "graph.pb"
        path.write_bytes(graph_def.SerializeToString())
        loaded = frontend.load(str(path))
        loaded.override_all_outputs([loaded.get_place_by_tensor_name(name) for name in outputs])
        model = frontend.convert(loaded)
    apply_moc_transformations(model, cf=False, smart_reshape=True)
    compress_quantize_weights_transformation(model)
    apply_fused_names_cleanup(model)
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
    """Compile ``model`` (an ``ov.Model``) for ``device``: anchor -> the runtime precision of the layer computing it
    ("" when no compiled layer computes it under that name)."""
    ov = import_openvino()
    compiled = ov.Core().compile_model(model, device)
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


class OpenVinoRunner:
    """An OpenVINO model compiled once for CPU, called like ``runtime.GraphRunner``: arrays in the order of ``inputs``
    (TensorSpecs, matched to the model's inputs by tensor name), the outputs as a list in the model's order.
    ``threads`` and ``precision`` ("f32", "bf16": the precision of the layers not run in int8) set the plugin's
    INFERENCE_NUM_THREADS and INFERENCE_PRECISION_HINT; None keeps its default (bf16 on CPUs with AMX)."""

    def __init__(self, model, inputs, *, threads: int | None = None, precision: str | None = None):
        ov = import_openvino()
        config = {key: value for key, value in (("INFERENCE_NUM_THREADS", threads),
                                                ("INFERENCE_PRECISION_HINT", precision)) if value}
        self.compiled = ov.Core().compile_model(model, "CPU", config)
        names = [port.get_names() for port in self.compiled.inputs]
        self._ports = [next((i for i, n in enumerate(names) if spec.name in n or spec.node in n), None) for spec in inputs]
        if None in self._ports:
            found = ", ".join(_port_name(port) for port in self.compiled.inputs)
            raise ModelInputError(f"the OpenVINO model's inputs ({found}) are not the graph's "
                                  f"({', '.join(s.name for s in inputs)}); pass a model with the same inputs")
        self._request = self.compiled.create_infer_request()

    def __call__(self, *arrays) -> list[np.ndarray]:
        try:
            results = self._request.infer({port: np.ascontiguousarray(a) for port, a in zip(self._ports, arrays)})
        except RuntimeError as exc:
            raise ModelInputError(f"OpenVINO failed running the model ({first_line(exc)}); check that the data fits "
                                  "the model's inputs (shape, dtype)") from exc
        return [results[port] for port in self.compiled.outputs]

    def close(self) -> None:
        self._request = self.compiled = None


def read_ir(path):
    """The OpenVINO IR at ``path`` (.xml, with its .bin beside it) as an ``ov.Model``, both files through kquant's file
    gate; a missing .bin or an IR OpenVINO cannot read is an error naming the file."""
    from kquant.files import checked_path, check_fits_in_memory

    xml = checked_path(path, role="OpenVINO .xml", directory_ok=False)
    weights = xml.with_suffix(".bin")
    if not weights.exists():
        raise ModelNotFoundError(f"{xml} is an OpenVINO IR whose weights file {weights} does not exist; keep the .bin "
                                 "next to the .xml, under the same name")
    checked_path(weights, role="OpenVINO .bin", directory_ok=False)
    check_fits_in_memory(xml.stat().st_size + weights.stat().st_size, str(xml))
    ov = import_openvino()
    try:
        return ov.Core().read_model(str(xml), str(weights))
    except RuntimeError as exc:
        raise ModelFormatError(f"OpenVINO cannot read {xml} ({first_line(exc)}); pass an IR written by OpenVINO "
                               "(model.xml + model.bin)") from exc


def model_specs(model) -> tuple[tuple, tuple]:
    """(inputs, outputs) of an ``ov.Model`` as TensorSpecs: tensor names, numpy dtype names, shapes (None: dynamic)."""
    def spec(port):
        shape = port.get_partial_shape()
        dims = None if shape.rank.is_dynamic else tuple(d.get_length() if d.is_static else None for d in shape)
        return TensorSpec(_port_name(port), np.dtype(port.get_element_type().to_dtype()).name, dims)

    return tuple(spec(p) for p in model.inputs), tuple(spec(p) for p in model.outputs)


def _port_name(port) -> str:
    """A port's tensor name: the shortest, which is the TF tensor name the frontend kept (``probs:0``)."""
    names = port.get_names()
    return min(names, key=lambda n: (len(n), n)) if names else port.get_node().get_friendly_name()
