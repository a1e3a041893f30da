"""What every int8 op family declares: the ``Unit`` it claims in the fp32 graph and the ``OpQuantizer`` interface.

A unit is a chain of fp32 nodes ending in ``output`` (whose name the int8 graph keeps, as a Dequantize, so
fp32 consumers and graph outputs are untouched). Its quantizer says, in one place, which pattern it claims
(through ``kquant.transforms.pattern``'s matcher), which tensors need calibrated ranges, whether it can read
an input shifted to unsigned codes, and its lowerings: the int8 ops (oneDNN's fused ones or the public
``Quantized*`` ones) and QDQ, the fp32 graph with FakeQuant where the int8 graph rounds.
"""

from __future__ import annotations

import dataclasses

from kquant.graphdef import GraphIndex, const_value, tensor_name
from kquant.quantization.encoding import QTensor
from kquant.transforms.pattern import Match, match_at

# Activations whose output is never negative: the int8 output is quint8 [0, max].
NON_NEGATIVE_ACTIVATIONS = ("Relu", "Relu6", "Sigmoid")


@dataclasses.dataclass(frozen=True)
class Unit:
    """One future int8 op: its quantizer, anchor node, fused nodes, and the fp32 tensors it reads and writes."""

    quantizer: "OpQuantizer"
    anchor: str          # the Conv2D/MatMul/MaxPool/... node
    nodes: tuple         # every fp32 node the unit replaces, anchor first
    data_input: str      # the activation tensor it reads
    output: str          # the node whose output it produces
    weights: str = ""    # Const node of the filter / matrix
    bias: str = ""       # Const node of the bias ("" = none)
    activation: str = ""  # "" or an activation the int8 op fuses; a MatMul's GELU is "GeluExact" or "GeluApproximate"
    summand: str = ""    # conv only: the tensor a residual Add adds (before the ReLU, if any), fused as oneDNN's sum
    pre_sum: str = ""    # with a summand: the node holding conv + bias, before the Add
    more_inputs: tuple = ()  # ConcatV2 only: the tensors it joins after data_input
    pad: str = ""        # depthwise conv only: the zero Pad before it, which its int8 op does as explicit padding

    @property
    def family(self) -> str:
        return self.quantizer.family

    @property
    def weighted(self) -> bool:
        """Whether it computes with weights into a requantized output (a convolution or a matmul)."""
        return self.quantizer.weighted

    @property
    def data_inputs(self) -> tuple:
        """The activation tensors it reads: ``data_input``, then (a ConcatV2's) ``more_inputs``."""
        return (self.data_input, *self.more_inputs)

    @property
    def output_tensor(self) -> str:
        return f"{self.output}:0"

    def without_sum(self) -> "Unit":
        """The same conv with the residual Add and its activation left to fp32 (output = conv + bias)."""
        kept = self.nodes[: self.nodes.index(self.pre_sum) + 1]
        return dataclasses.replace(self, nodes=kept, output=self.pre_sum, activation="", summand="", pre_sum="")


@dataclasses.dataclass
class PlanGraph:
    """What a quantizer's ``match`` sees: the fp32 graph's index and the tensors earlier units produce in int8."""

    index: GraphIndex
    produced: set = dataclasses.field(default_factory=set)


class OpQuantizer:
    """One op family. Subclasses set ``family`` and ``op_types`` and implement ``match`` and the lowerings.

    ``lowering`` is the ``rewrite.Lowering`` the int8 graph is built in, ``points`` the ``qdq.QdqPoints`` of the
    QDQ graph: they call the quantizers, never the other way round.
    """

    family: str = ""
    op_types: tuple = ()
    weighted = False   # weights and a requantized output: what tuning ranks, bf16 covers and seed logs name
    stem_candidate = False  # a convolution that may be an image stem (``plan.stem_convs``)
    dropped_when_unread = False  # worth running in int8 only when some unit reads its output in int8

    def match(self, node, graph: PlanGraph) -> Unit | None:
        """The unit anchored at ``node`` (one of ``op_types``), or None when the op stays fp32."""
        raise NotImplementedError

    def ranges_needed(self, unit: Unit) -> set:
        """The tensors whose calibrated range the lowering reads: every input (a QuantizeV2 if it enters from fp32)."""
        return set(unit.data_inputs)

    def supported(self, unit: Unit, lowering) -> bool:
        """Whether the chosen kernels can run ``unit``, given what is already int8 around it."""
        return True

    def fuses_sum(self, unit: Unit, lowering) -> bool:
        """Whether the kernel can fuse ``unit``'s residual Add (else the Add stays fp32)."""
        return False

    def reads_shifted(self, unit: Unit, lowering) -> bool:
        """Whether ``unit`` can read its input as unsigned codes of x - low (a signed tensor, shifted)."""
        return False

    def lower(self, unit: Unit, lowering) -> QTensor | None:
        """Emit the int8 op(s) into ``lowering``; the int8 output, or None when the op writes float itself."""
        raise NotImplementedError

    def qdq(self, unit: Unit, points) -> None:
        """Declare where the int8 op rounds: weights, outputs, inputs entering from fp32 (``qdq.QdqPoints``)."""
        raise NotImplementedError


def pass_through_unit(quantizer: OpQuantizer, node, graph: PlanGraph) -> Unit | None:
    """A one-node unit reading ``node``'s first input, which must already be int8 (pools, reshapes, resizes)."""
    data = tensor_name(node.input[0])
    if data not in graph.produced:
        return None
    return Unit(quantizer, node.name, (node.name,), data, node.name)


def claim_chain(patterns, anchor, index: GraphIndex, accept) -> Match | None:
    """The longest match of ``patterns`` (tried in order, longest first) that ends a chain of single readers
    starting at ``anchor``, labels it "anchor", and passes ``accept(match)``; None if there is none.

    Every node of such a chain but the last is read only by the next one, so the unit may replace it.
    """
    depth = max(_depth(p) for p in patterns)
    chain = [anchor]
    while len(chain) < depth and (reader := index.only_reader(chain[-1].name)) is not None:
        chain.append(reader)
    for tail in reversed(chain):
        for pattern in patterns:
            match = match_at(pattern, tail, index, bound={"anchor": anchor})
            if match is not None and accept(match):
                return match
    return None


def _depth(pattern) -> int:
    """Nodes on the longest path from the root to a leaf, counting only operations (not Consts or tensors)."""
    inner = [_depth(p) for p in pattern.inputs if p.op not in ("*", "Const")]
    return 1 + max(inner, default=0)


def is_scalar(index: GraphIndex, node, value: float) -> bool:
    """Whether ``node`` is a one-element Const equal to ``value`` (to float32 precision)."""
    if node is None or node.op != "Const":
        return False
    constant = const_value(node)
    return constant.size == 1 and abs(float(constant.reshape(-1)[0]) - value) <= 1e-6 * max(1.0, abs(value))


def only_read_inside(match: Match, index: GraphIndex, tail) -> bool:
    """Whether every matched node but the root and the Consts is read only by matched nodes; ``tail`` (the node the
    match starts from) may be read only inside too."""
    names = {node.name for node in match.matched} | {tail.name}
    return all(index.consumers(node.name) <= names for node in [*match.matched, tail]
               if node is not match.root and node.op != "Const")
