"""Find the subgraphs that become one int8 op: the quantization plan.

A unit is a chain of fp32 nodes ending in ``output`` (whose name the int8 graph keeps, as a
Dequantize, so fp32 consumers and graph outputs are untouched). ``UNIT_BUILDERS`` maps the op
type that anchors a unit to the function that matches it; supporting a new op is one function
and one line there.
"""

from __future__ import annotations

import dataclasses

from tensorflow.python.framework import tensor_util

from kquant.graph import ancestors, consumers, is_control_input, node_name, nodes_by_name

# what each kind fuses after its bias: oneDNN's int8 convolution only Relu (Relu6 is its range capped at 6), its
# int8 inner product also the activations below
ACTIVATIONS = {"conv": ("Relu", "Relu6"), "matmul": ("Relu", "Relu6", "Sigmoid", "Tanh", "Elu", "LeakyRelu")}
# and a MatMul's GELU, a subgraph (see _gelu), as the kernel's GeluExact / GeluApproximate
NON_NEGATIVE_ACTIVATIONS = ("Relu", "Relu6", "Sigmoid")
PASS_THROUGH_OPS = ("MaxPool", "AvgPool", "Reshape")
WEIGHTED_OPS = ("Conv2D", "DepthwiseConv2dNative", "MatMul")
STEM_MAX_CHANNELS = 4  # grayscale, RGB or RGBA images


@dataclasses.dataclass(frozen=True)
class Unit:
    """One future int8 op: its kind, anchor node, fused nodes, and the fp32 tensors it reads and writes."""

    kind: str            # "conv", "matmul", "ConcatV2" or a pass-through op type
    anchor: str          # the Conv2D/MatMul/MaxPool/... node
    nodes: tuple         # every fp32 node the unit replaces, anchor first
    data_input: str      # the activation tensor it reads
    output: str          # the node whose output it produces
    weights: str = ""    # Const node of the filter / matrix
    bias: str = ""       # Const node of the bias ("" = none)
    activation: str = ""  # "" or one of ACTIVATIONS[kind]; a MatMul's GELU is "GeluExact" or "GeluApproximate"
    summand: str = ""    # conv only: the tensor a residual Add adds (before the ReLU, if any), fused as oneDNN's sum
    pre_sum: str = ""    # with a summand: the node holding conv + bias, before the Add
    more_inputs: tuple = ()  # ConcatV2 only: the tensors it joins after data_input
    pad: str = ""        # depthwise conv only: the zero Pad before it, which its int8 op does as explicit padding

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



def find_units(graph_def, excluded_ops=(), excluded_nodes=()) -> list[Unit]:
    """The quantizable units of ``graph_def`` in graph order; pass-through ops only after another unit."""
    nodes = {n.name: n for n in graph_def.node}
    readers = consumers(graph_def)
    excluded_ops, excluded_nodes = set(excluded_ops), set(excluded_nodes)
    units, produced, claimed = [], set(), set()
    for node in topological_order(graph_def, nodes):
        builder = UNIT_BUILDERS.get(node.op)
        if builder is None or node.op in excluded_ops:
            continue
        unit = builder(node, nodes, readers, produced)
        if unit is not None and unit.summand and claimed.intersection(unit.nodes):
            unit = unit.without_sum()  # both convs of a residual Add match it: the first one found fuses it
        if unit is None or excluded_nodes.intersection(unit.nodes) or excluded_ops.intersection(nodes[n].op for n in unit.nodes):
            continue
        units.append(unit)
        produced.add(unit.output_tensor)
        claimed.update(unit.nodes)
    return _without_unread_reshapes(units)


def _without_unread_reshapes(units) -> list[Unit]:
    """``units`` without the Reshapes no unit reads in int8 (attention's query, key and value projections, read by
    an fp32 Einsum): the unit before one hands it fp32 instead, a MatMul dequantizing in its kernel, so the
    tensor skips a rounding and the graph a QuantizedReshape and a Dequantize."""
    while unread := [u for u in units if u.kind == "Reshape" and u.output_tensor not in tensors_read_as_int8(units)]:
        units = [u for u in units if u not in unread]
    return units


def tensors_read_as_int8(units) -> set[str]:
    """Every tensor some unit reads in int8: the data inputs and the residual summands."""
    return {t for u in units for t in u.data_inputs} | {u.summand for u in units if u.summand}


def stem_convs(graph_def, units) -> list[str]:
    """Anchors of the image stems among ``units``: convolutions with at most ``STEM_MAX_CHANNELS`` input channels
    that read the model input directly or through ops other than convolutions and matmuls (a Rescaling, a Pad)."""
    nodes = nodes_by_name(graph_def)
    stems = []
    for unit in units:
        if unit.kind == "conv" and _input_channels(nodes[unit.weights]) <= STEM_MAX_CHANNELS \
                and not any(nodes[n].op in WEIGHTED_OPS for n in ancestors(nodes, [unit.data_input])):
            stems.append(unit.anchor)
    return stems


def _input_channels(weights) -> int:
    return weights.attr["value"].tensor.tensor_shape.dim[2].size  # HWIO, and HWIM for depthwise filters


def _conv_unit(node, nodes, readers, produced):
    unit = _weighted_unit("conv", node, nodes, readers, bias_ops=("BiasAdd", "Add", "AddV2"), residual=True)
    pad = _zero_spatial_pad(node, nodes, readers) if unit is not None and node.op == "DepthwiseConv2dNative" else None
    if pad is None:
        return unit
    return dataclasses.replace(unit, nodes=(unit.anchor, pad.name, *unit.nodes[1:]), data_input=_tensor(pad.input[0]),
                               pad=pad.name)


def _zero_spatial_pad(conv, nodes, readers):
    """The Pad that only ``conv`` (VALID, NHWC) reads, if it pads the height and width with zeros: the public
    DepthwiseConv2dNative keeps it (see mkl_fuse_pad_and_conv), the int8 op takes it as explicit padding."""
    pad = nodes.get(node_name(conv.input[0]))
    if pad is None or pad.op != "Pad" or _only_reader(pad, readers) is not conv or conv.attr["padding"].s != b"VALID" \
            or conv.attr["data_format"].s not in (b"", b"NHWC") or is_control_input(pad.input[1]):
        return None
    paddings = nodes.get(node_name(pad.input[1]))
    if paddings is None or paddings.op != "Const":
        return None
    value = tensor_util.MakeNdarray(paddings.attr["value"].tensor)
    if value.shape != (4, 2) or (value < 0).any() or value[0].any() or value[3].any():
        return None
    return pad


def _matmul_unit(node, nodes, readers, produced):
    if node.attr["transpose_a"].b or node.attr["transpose_b"].b:
        return None
    return _weighted_unit("matmul", node, nodes, readers, bias_ops=("BiasAdd", "Add", "AddV2"))


def _concat_unit(node, nodes, readers, produced):
    """A ConcatV2 along a constant axis of tensors at least one of which is an int8 unit output."""
    *values, axis = node.input
    if len(values) < 2 or nodes[node_name(axis)].op != "Const" or not any(_tensor(v) in produced for v in values):
        return None
    return Unit("ConcatV2", node.name, (node.name,), _tensor(values[0]), node.name,
                more_inputs=tuple(_tensor(v) for v in values[1:]))


def _pass_through_unit(node, nodes, readers, produced):
    """Pools and reshapes stay int8 only when their input already is."""
    data = node.input[0]
    if _tensor(data) not in produced:
        return None
    if node.op == "Reshape" and nodes[node_name(node.input[1])].op != "Const":
        return None
    return Unit(node.op, node.name, (node.name,), _tensor(data), node.name)


def _weighted_unit(kind, node, nodes, readers, bias_ops, residual=False):
    weights = nodes.get(node_name(node.input[1]))
    if weights is None or weights.op != "Const" or any(is_control_input(i) for i in node.input):
        return None
    chain, bias, activation = [node.name], "", ""
    tail = node
    follower = _only_reader(tail, readers)
    if follower is not None and follower.op in bias_ops:
        other = nodes.get(node_name(follower.input[1]))
        if node_name(follower.input[0]) == tail.name and other is not None and other.op == "Const" \
                and _vector_length(other) == _output_channels(node, weights):
            chain.append(follower.name)
            bias, tail = other.name, follower
            follower = _only_reader(tail, readers)
    summand, pre_sum = "", ""
    if residual and follower is not None and follower.op in ("Add", "AddV2") and len(follower.input) == 2:
        others = [i for i in follower.input if node_name(i) != tail.name]
        if len(others) == 1 and nodes[node_name(others[0])].op != "Const" and not is_control_input(others[0]):
            chain.append(follower.name)
            summand, pre_sum, tail, follower = _tensor(others[0]), tail.name, follower, _only_reader(follower, readers)
    if follower is not None and follower.op in ACTIVATIONS[kind]:
        chain.append(follower.name)
        activation, tail = follower.op, follower
    elif kind == "matmul" and follower is None and (gelu := _gelu(tail, nodes, readers)) is not None:
        activation, gelu_nodes = gelu
        chain.extend(n.name for n in gelu_nodes)
        tail = gelu_nodes[-1]
    return Unit(kind, node.name, tuple(chain), _tensor(node.input[0]), tail.name, weights.name, bias, activation,
                summand, pre_sum)


def _gelu(x, nodes, readers):
    """("GeluExact" or "GeluApproximate", its nodes, the output last) when the readers of ``x`` are TensorFlow's
    GELU of it (tf.nn.gelu, which Keras's gelu runs) and nothing else reads inside it; else None.

    Exact: 0.5 x * erfc(-x / sqrt 2); approximate: 0.5 x * (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
    """
    entries = {node.op: node for node in readers.get(x.name, [])}
    half = entries.get("Mul")
    if half is None or len(entries) != len(readers.get(x.name, [])) or not _scales(half, x.name, nodes, 0.5):
        return None
    if set(entries) == {"Neg", "Mul"}:
        chain = _follow(entries["Neg"], readers, ("Mul", "Erfc", "Mul"))
        if chain is None or not _scales(chain[0], entries["Neg"].name, nodes, 2 ** -0.5):
            return None
        kind, found = "GeluExact", [entries["Neg"], *chain]
    elif set(entries) == {"Pow", "AddV2", "Mul"}:
        chain = _follow(entries["Pow"], readers, ("Mul", "AddV2", "Mul", "Tanh", "AddV2", "Mul"))
        if (chain is None or not _scales(entries["Pow"], x.name, nodes, 3.0) or not _scales(chain[0], entries["Pow"].name, nodes, 0.044715)
                or chain[1] is not entries["AddV2"] or not _scales(chain[2], chain[1].name, nodes, (2 / 3.141592653589793) ** 0.5)
                or not _scales(chain[4], chain[3].name, nodes, 1.0)):
            return None
        kind, found = "GeluApproximate", [entries["Pow"], *chain]
    else:
        return None
    output = found[-1]
    if sorted(node_name(i) for i in output.input) != sorted((half.name, found[-2].name)) or _only_reader(half, readers) is not output:
        return None
    return kind, [half, *found]


def _follow(start, readers, ops):
    """The nodes after ``start``, each the only reader of the one before, if their types are ``ops``; else None."""
    chain, node = [], start
    for op in ops:
        node = _only_reader(node, readers)
        if node is None or node.op != op:
            return None
        chain.append(node)
    return chain


def _scales(node, operand: str, nodes, value: float) -> bool:
    """Whether ``node``'s inputs are ``operand`` and a scalar Const equal to ``value`` (to float32 precision)."""
    others = [nodes.get(node_name(i)) for i in node.input if node_name(i) != operand and not is_control_input(i)]
    if len(node.input) != 2 or len(others) != 1 or others[0] is None or others[0].op != "Const":
        return False
    constant = tensor_util.MakeNdarray(others[0].attr["value"].tensor)
    return constant.size == 1 and abs(float(constant.reshape(-1)[0]) - value) <= 1e-6 * max(1.0, abs(value))


def _only_reader(node, readers):
    """The single node reading ``node``'s output 0, or None."""
    found = readers.get(node.name, [])
    if len(found) != 1 or any(_tensor(i) != f"{node.name}:0" for i in found[0].input if node_name(i) == node.name):
        return None
    return found[0]


def _vector_length(const_node) -> int:
    dims = const_node.attr["value"].tensor.tensor_shape.dim
    return dims[0].size if len(dims) == 1 else -1


def _output_channels(node, weights) -> int:
    dims = [d.size for d in weights.attr["value"].tensor.tensor_shape.dim]
    if node.op == "DepthwiseConv2dNative":
        return dims[2] * dims[3]
    return dims[-1]


def _tensor(name: str) -> str:
    return name if ":" in name else f"{name}:0"


def topological_order(graph_def, nodes):
    """The nodes of ``graph_def`` (``nodes``: name -> node) with every node after its inputs."""
    order, state = [], {}
    for root in graph_def.node:
        stack = [(root.name, False)]
        while stack:
            name, done = stack.pop()
            if done:
                state[name] = 2
                order.append(nodes[name])
                continue
            if state.get(name) or name not in nodes:
                continue
            state[name] = 1
            stack.append((name, True))
            stack.extend((node_name(i), False) for i in nodes[name].input if not state.get(node_name(i)))
    return order


UNIT_BUILDERS = {
    "Conv2D": _conv_unit,
    "DepthwiseConv2dNative": _conv_unit,
    "MatMul": _matmul_unit,
    "ConcatV2": _concat_unit,
    **{op: _pass_through_unit for op in PASS_THROUGH_OPS},
}
