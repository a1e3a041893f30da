"""kquant: freeze, optimize and int8-quantize TensorFlow/Keras models for Intel-architecture CPUs."""

from kquant import _startup  # noqa: F401  (must come first: sets up TensorFlow)
from kquant.api import QuantizedModel, quantize
from kquant.benchmark import benchmark
from kquant.benchmark_report import BenchmarkReport
from kquant.converters import freeze
from kquant.converters.keras import save_keras_model_to_pb
from kquant.errors import KQuantError
from kquant.graph import FrozenGraph, TensorSpec, load_graph_def, save_graph_def
from kquant.quantization.graph_converter import GraphConverter
from kquant.runtime import GraphRunner, ensure_onednn, onednn_enabled
from kquant.summarize import GraphSummary, summarize_graph
from kquant.transforms import transform_graph
from kquant import operations  # the seed's transform lists: kquant.operations.optimizing_for_deployment_trans, ...

__version__ = "0.1.0"

__all__ = [
    "BenchmarkReport",
    "FrozenGraph",
    "GraphConverter",
    "GraphRunner",
    "GraphSummary",
    "KQuantError",
    "QuantizedModel",
    "TensorSpec",
    "benchmark",
    "ensure_onednn",
    "freeze",
    "load_graph_def",
    "onednn_enabled",
    "operations",
    "quantize",
    "save_graph_def",
    "save_keras_model_to_pb",
    "summarize_graph",
    "transform_graph",
]
