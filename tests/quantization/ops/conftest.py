"""Lower one small graph with every lowering of its op family and compare each with the QDQ lowering.

``lowered(fn, shape)`` freezes a TensorFlow function of one float32 input, plans it through the registry,
calibrates min/max ranges on 32 seeded samples and returns the plan, the int8 graph (oneDNN or public
kernels), and its output on 16 other samples next to the QDQ graph's (exact 8-bit arithmetic) and fp32's.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

import kquant
from kquant.quantization.collect import collect_ranges
from kquant.quantization.encoding import RewriteOptions
from kquant.quantization.pipeline import optimize
from kquant.quantization.plan import find_units, tensors_to_calibrate
from kquant.quantization.qdq import qdq_graph_def
from kquant.quantization.rewrite import rewrite_graph
from kquant.runtime import GraphRunner


@dataclasses.dataclass
class Lowered:
    units: list          # the plan
    emitted: list        # the units the lowering ran in int8
    graph_def: object    # the int8 graph
    int8: np.ndarray     # its output on the evaluation samples
    qdq: np.ndarray      # the QDQ graph's
    fp32: np.ndarray     # the fp32 graph's
    step: float          # one 8-bit step of the output's calibrated range

    def ops(self) -> list[str]:
        return [node.op for node in self.graph_def.node]

    def within_steps(self, max_steps: float = 4.0, rms_steps: float = 1.5) -> bool:
        """Whether the int8 output is within ``max_steps`` 8-bit steps of the QDQ output everywhere and ``rms_steps``
        on average: the kernels round the same points, but accumulate and requantize in their own order, and
        without VNNI a weight that meets an unsigned input is scaled pair-safe (``weights.quantize_weights``)."""
        error = np.abs(self.int8 - self.qdq)
        return float(error.max()) <= max_steps * self.step and float(np.sqrt(np.mean(error ** 2))) <= rms_steps * self.step


def lowered(fn, shape, *, kernels="onednn", low=-1.0, high=1.0, seed=0) -> Lowered:
    frozen = kquant.freeze(tf.function(fn).get_concrete_function(tf.TensorSpec([None, *shape], tf.float32, name="x")))
    fp32 = optimize(frozen)
    units = find_units(fp32.graph_def)
    x = np.random.default_rng(seed).uniform(low, high, (48, *shape)).astype(np.float32)
    output = fp32.output_names[0]
    ranges = collect_ranges(fp32.graph_def, fp32.input_names, tensors_to_calibrate(units) + [output], [[x[:32]]],
                            progress=False)
    graph_def, emitted = rewrite_graph(fp32.graph_def, units, ranges, fp32.output_names,
                                       RewriteOptions(kernels=kernels, pair_safe_weights=True))
    results = {}
    for name, graph in (("int8", graph_def), ("qdq", qdq_graph_def(fp32, emitted, ranges)), ("fp32", fp32.graph_def)):
        with GraphRunner(graph, fp32.input_names, fp32.output_names) as run:
            results[name] = run(x[32:])[0]
    low_out, high_out = ranges[output]
    return Lowered(units, emitted, graph_def, step=(high_out - low_out) / 255, **results)


def constant(*shape, seed=0, scale=0.5):
    return tf.constant((np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32))
