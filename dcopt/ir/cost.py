"""Data-movement cost model: FLOPs and bytes moved, per node and per graph.

Why: dcopt's optimizations (fusion, memory planning, layout changes) do not change how much
arithmetic a model does; they change how many bytes travel between kernels and memory. To
show what a pass bought, and to point at what to optimize next, we need the same two numbers
for every node before and after: the work it does (FLOPs) and the data it moves (bytes). Their
ratio, the arithmetic intensity, says whether a kernel is bound by compute or by memory.

The model is deliberately simple and reproducible, computed from the container types only:

* **Bytes.** A node reads each distinct input container once, in full, and writes each live
  output once (an output nobody reads, like an unused Dropout mask, is not materialized).
  Parameter (and constant) inputs count: weights have to be read too; ``param_bytes`` says how
  much of the read is weights. Subgraph ops (If/Loop/Scan) count their inputs, the outer values
  their bodies capture, and their outputs, not the traffic inside the body.
* **FLOPs.** One formula per op in a registry (``@flops("Conv")``). A multiply-add is 2 FLOPs.
  Elementwise ops cost a per-element constant times the output elements; transcendental
  functions (Exp, Tanh, Erf, ...) cost :data:`TRANSCENDENTAL` each. Pure data movement
  (Reshape, Gather, Concat, ...) is 0 FLOPs. An op with no formula gets the elementwise default
  (1 per output element) and ``modelled=False`` so a report can flag it.
* **Symbolic dims.** ``bindings`` specializes named dims (``{"N": 1}``). A node whose sizes are
  still not static gets ``known=False``; it is left out of the totals and counted in
  ``GraphCost.unknown_nodes``.
* **Constant-producing nodes.** Some models build their weights at run time from constants
  (the ONNX "light" model zoo makes every weight with ``ConstantOfShape``). A node that is
  deterministic and reads only constants is *constant-producing*: constant folding removes it,
  so it is excluded from the run-time totals (counted in ``GraphCost.constant_nodes``) and its
  outputs count as weights, like parameters.

``GraphCost.transient_bytes`` -- the bytes moved *between kernels*, each transient written once
and read once per reading node -- is the quantity fusion and memory planning reduce.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Mapping

import numpy as np

from dcopt.ir.graph import Graph, Kind, Node
from dcopt.ir.types import TensorType
from dcopt.ops.registry import schema_defaults

#: FLOPs charged for one transcendental function evaluation (exp, log, tanh, erf, sin, ...).
#: Hardware varies widely (a few to ~20 instructions); 8 is a middle-of-the-road constant.
TRANSCENDENTAL = 8

#: FLOPs per element of the normalizations (the statistics pass plus the affine transform).
BATCHNORM_PER_ELEMENT = 4  # (x - mean) / sqrt(var + eps) * scale + bias, statistics given
NORMALIZATION_PER_ELEMENT = 8  # mean, variance (3), then subtract, divide, scale, shift
SOFTMAX_PER_ELEMENT = 5  # max, subtract, exp, sum, divide: the customary ~5 per element

#: Ops whose outputs are not constant even when their inputs are.
NONDETERMINISTIC = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                              "Multinomial", "Bernoulli"})


class _Unknown(Exception):
    """A size the formula needs is not static."""


# -- result types -------------------------------------------------------------------------------

@dataclass(frozen=True)
class OpCost:
    """Cost of one node. Size fields are None when the node's sizes are not static."""

    node: str
    op: str
    flops: int | None
    bytes_read: int | None
    bytes_written: int | None
    param_bytes: int | None
    known: bool
    modelled: bool = True  # False: no formula for this op, the elementwise default was used
    constant: bool = False  # constant-producing: folded away at compile time

    @property
    def bytes_moved(self) -> int | None:
        if self.bytes_read is None or self.bytes_written is None:
            return None
        return self.bytes_read + self.bytes_written

    @property
    def arithmetic_intensity(self) -> float | None:
        """FLOPs per byte moved (None if unknown or nothing is moved)."""
        moved = self.bytes_moved
        if self.flops is None or not moved:
            return None
        return self.flops / moved

    def to_dict(self) -> dict:
        return {**asdict(self), "bytes_moved": self.bytes_moved, "arithmetic_intensity": self.arithmetic_intensity}


@dataclass
class OpTypeCost:
    """Aggregate over all (run-time) nodes of one op type."""

    count: int = 0
    flops: int = 0
    bytes: int = 0
    unknown: int = 0


@dataclass
class GraphCost:
    """Whole-graph cost. Totals cover run-time nodes with known cost only (see module doc)."""

    nodes: list[OpCost]
    total_flops: int
    total_bytes_read: int
    total_bytes_written: int
    unknown_nodes: int
    constant_nodes: int
    parameter_count: int  # elements in graph.parameters
    parameter_bytes: int
    weight_count: int  # elements of constant data read at run time (parameters + constant-produced)
    weight_bytes: int
    input_bytes: int | None
    output_bytes: int | None
    transient_bytes: int  # bytes moved between kernels: sum of size x (1 write + readers)
    by_op: dict[str, OpTypeCost] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return self.total_bytes_read + self.total_bytes_written

    @property
    def total_macs(self) -> int:
        return self.total_flops // 2

    @property
    def arithmetic_intensity(self) -> float | None:
        return self.total_flops / self.total_bytes if self.total_bytes else None

    @property
    def complete(self) -> bool:
        """True when every run-time node's cost is known (the totals are not partial)."""
        return self.unknown_nodes == 0

    def to_dict(self, include_nodes: bool = True) -> dict:
        result = {
            "total_flops": self.total_flops,
            "total_macs": self.total_macs,
            "total_bytes": self.total_bytes,
            "total_bytes_read": self.total_bytes_read,
            "total_bytes_written": self.total_bytes_written,
            "arithmetic_intensity": self.arithmetic_intensity,
            "transient_bytes": self.transient_bytes,
            "input_bytes": self.input_bytes,
            "output_bytes": self.output_bytes,
            "parameter_count": self.parameter_count,
            "parameter_bytes": self.parameter_bytes,
            "weight_count": self.weight_count,
            "weight_bytes": self.weight_bytes,
            "unknown_nodes": self.unknown_nodes,
            "constant_nodes": self.constant_nodes,
            "complete": self.complete,
            "by_op": {op: asdict(agg) for op, agg in self.by_op.items()},
        }
        if include_nodes:
            result["nodes"] = [c.to_dict() for c in self.nodes]
        return result


# -- the formula registry -----------------------------------------------------------------------

FlopFormula = Callable[["_View"], int]
_FORMULAS: dict[str, FlopFormula] = {}


def flops(*ops: str):
    """Register a FLOP formula for one or more (default-domain) op names."""

    def register(fn: FlopFormula) -> FlopFormula:
        for op in ops:
            _FORMULAS[op] = fn
        return fn

    return register


def has_formula(op: str) -> bool:
    return op in _FORMULAS


class _View:
    """What a formula sees of a node: static shapes (raising _Unknown otherwise), attributes
    with ONNX schema defaults filled in, constant input values and subgraph FLOPs."""

    def __init__(self, node: Node, scope: "_Costing"):
        self.node = node
        self.scope = scope

    def attr(self, name: str, default=None):
        if name in self.node.attrs:
            return self.node.attrs[name]
        opset = self.scope.graph.opset_of(self.node.domain)
        return schema_defaults(self.node.op, self.node.domain, opset).get(name, default)

    def has_input(self, i: int) -> bool:
        return i < len(self.node.inputs) and bool(self.node.inputs[i])

    @property
    def n_inputs(self) -> int:
        return len(self.node.present_inputs)

    def _shape(self, name: str) -> tuple[int, ...]:
        t = self.scope.type_of(name) if name else None
        if t is None or not t.is_static:
            raise _Unknown(name)
        return tuple(int(d) for d in t.shape)

    def ishape(self, i: int = 0) -> tuple[int, ...]:
        if not self.has_input(i):
            raise _Unknown(f"input {i}")
        return self._shape(self.node.inputs[i])

    def oshape(self, i: int = 0) -> tuple[int, ...]:
        return self._shape(self.node.outputs[i] if i < len(self.node.outputs) else "")

    def inumel(self, i: int = 0) -> int:
        return math.prod(self.ishape(i))

    def onumel(self, i: int = 0) -> int:
        return math.prod(self.oshape(i))

    def constant_input(self, i: int) -> np.ndarray:
        value = self.scope.constant_value(self.node.inputs[i]) if self.has_input(i) else None
        if value is None:
            raise _Unknown(f"value of input {i}")
        return np.asarray(value)

    def subgraph_flops(self, body: Graph) -> int:
        return self.scope.subgraph_flops(body)


def per_output_element(cost: int) -> FlopFormula:
    return lambda v: cost * v.onumel()


def per_input_element(cost: int) -> FlopFormula:
    return lambda v: cost * v.inumel()


# Pure data movement / metadata: no arithmetic.
for _op in ("Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Concat", "Split",
            "SplitToSequence", "Slice", "Gather", "GatherElements", "GatherND", "Scatter", "ScatterElements",
            "ScatterND", "Expand", "Tile", "Pad", "Shape", "Size", "Cast", "CastLike", "Dropout", "Constant",
            "ConstantOfShape", "DepthToSpace", "SpaceToDepth", "ReverseSequence", "Compress", "NonZero", "OneHot",
            "Range", "EyeLike", "Trilu", "Col2Im", "Optional", "OptionalGetElement", "OptionalHasElement",
            "SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase", "SequenceInsert",
            "SequenceLength", "ConcatFromSequence", "MaxRoiPool", "MaxUnpool", "Unique", "CenterCropPad"):
    flops(_op)(lambda v: 0)

# Elementwise, per output element. Cheap arithmetic, comparisons and logic cost 1.
_ELEMENTWISE = {
    **dict.fromkeys(("Add", "Sub", "Mul", "Div", "Neg", "Abs", "Relu", "LeakyRelu", "PRelu", "ThresholdedRelu",
                     "Sign", "Ceil", "Floor", "Round", "Reciprocal", "Sqrt", "Mod", "Not", "And", "Or", "Xor",
                     "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "IsNaN", "IsInf", "Where",
                     "BitShift", "BitwiseAnd", "BitwiseOr", "BitwiseXor", "BitwiseNot", "CumSum", "Shrink"), 1),
    **dict.fromkeys(("Clip", "Elu", "Selu", "Celu", "HardSigmoid", "DequantizeLinear"), 2),
    **dict.fromkeys(("HardSwish", "Softsign", "QuantizeLinear"), 3),
    **dict.fromkeys(("Exp", "Log", "Tanh", "Erf", "Pow", "Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh",
                     "Cosh", "Asinh", "Acosh", "Atanh"), TRANSCENDENTAL),
    "Sigmoid": TRANSCENDENTAL + 2,  # 1 / (1 + exp(-x))
    "Softplus": 2 * TRANSCENDENTAL + 1,  # log(exp(x) + 1)
    "Mish": 3 * TRANSCENDENTAL + 2,  # x * tanh(softplus(x))
    "Gelu": TRANSCENDENTAL + 4,  # 0.5 * x * (1 + erf(x / sqrt 2)), or the tanh approximation
    "Hardmax": 1,
}
for _op, _cost in _ELEMENTWISE.items():
    flops(_op)(per_output_element(_cost))


@flops("Sum", "Max", "Min")
def _variadic(v: _View) -> int:  # n inputs -> n-1 binary ops per output element
    return max(v.n_inputs - 1, 1) * v.onumel()


@flops("Mean")
def _mean(v: _View) -> int:
    return v.n_inputs * v.onumel()


# Reductions: per input element.
for _op, _cost in {**dict.fromkeys(("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
                                    "ArgMax", "ArgMin", "TopK", "GlobalMaxPool", "GlobalAveragePool"), 1),
                   **dict.fromkeys(("ReduceL2", "ReduceSumSquare", "GlobalLpPool"), 2),
                   **dict.fromkeys(("ReduceLogSum", "ReduceLogSumExp"), TRANSCENDENTAL + 1)}.items():
    flops(_op)(per_input_element(_cost))

flops("Softmax", "LogSoftmax")(per_input_element(SOFTMAX_PER_ELEMENT))
flops("BatchNormalization")(per_input_element(BATCHNORM_PER_ELEMENT))
flops("InstanceNormalization", "LayerNormalization", "GroupNormalization",
      "MeanVarianceNormalization")(per_input_element(NORMALIZATION_PER_ELEMENT))
flops("RMSNormalization")(per_input_element(NORMALIZATION_PER_ELEMENT - 2))  # no mean to subtract


@flops("LRN")
def _lrn(v: _View) -> int:  # sum of `size` squares, then (bias + alpha/size * s) ** beta, then divide
    return v.onumel() * (2 * int(v.attr("size")) + TRANSCENDENTAL + 3)


# -- compute-heavy ops --------------------------------------------------------------------------

def _bias(v: _View, index: int) -> int:
    return v.onumel() if v.has_input(index) else 0


@flops("Conv", "ConvInteger", "QLinearConv")
def _conv(v: _View) -> int:
    w_index = 3 if v.node.op == "QLinearConv" else 1
    w = v.ishape(w_index)  # [M, C/group, k1, k2, ...]: each output sums C/group * prod(k) products
    bias = _bias(v, 8 if v.node.op == "QLinearConv" else 2) if v.node.op != "ConvInteger" else 0
    return 2 * v.onumel() * math.prod(w[1:]) + bias


@flops("ConvTranspose")
def _conv_transpose(v: _View) -> int:
    w = v.ishape(1)  # [C, M/group, k...]: each input element scatters into M/group * prod(k) outputs
    return 2 * v.inumel(0) * math.prod(w[1:]) + _bias(v, 2)


@flops("MatMul", "MatMulInteger", "QLinearMatMul")
def _matmul(v: _View) -> int:
    a = v.ishape(0)  # every output element (batch x M x N, 1-D operands included) is a K-long dot
    return 2 * v.onumel() * a[-1]


@flops("Gemm")
def _gemm(v: _View) -> int:
    a = v.ishape(0)
    k = a[0] if v.attr("transA", 0) else a[1]
    return 2 * v.onumel() * k + _bias(v, 2)


@flops("Einsum")
def _einsum(v: _View) -> int:
    """Approximation: one product over every index combination (n_operands - 1 multiplies and
    an add per point)."""
    lhs = v.attr("equation").replace(" ", "").split("->")[0].split(",")
    extents: dict[str, int] = {}
    ellipsis: list[tuple[int, ...]] = []
    for i, term in enumerate(lhs):
        shape = v.ishape(i)
        named = term.replace("...", "")
        if "..." in term:
            before = term.index("...")
            ellipsis.append(shape[before:len(shape) - (len(named) - before)])
            shape = shape[:before] + shape[len(shape) - (len(named) - before):]
        extents.update(zip(named, shape))
    points = math.prod(extents.values()) * math.prod(np.broadcast_shapes(*ellipsis) if ellipsis else ())
    return len(lhs) * points


@flops("MaxPool", "AveragePool", "LpPool")
def _pool(v: _View) -> int:
    return v.onumel() * math.prod(v.attr("kernel_shape"))


@flops("Resize", "Upsample")
def _resize(v: _View) -> int:
    """Nearest: a copy. Linear: 2**k - 1 lerps (3 FLOPs each) over k resized axes. Cubic: 4**k
    weighted taps."""
    resized = sum(a != b for a, b in zip(v.ishape(0), v.oshape()))
    mode = v.attr("mode", "nearest")
    if mode in ("linear", "bilinear", "trilinear"):
        return v.onumel() * 3 * (2 ** resized - 1)
    if mode == "cubic":
        return v.onumel() * 2 * 4 ** resized
    return 0


@flops("Attention")
def _attention(v: _View) -> int:
    """softmax(Q K^T) V: QK^T is a K_seq-long dot per (query, key); AV likewise per output."""
    q = v.ishape(0)
    kv_len = v.ishape(1)[-2] + (v.ishape(4)[-2] if v.has_input(4) else 0)
    heads = q[1] if len(q) == 4 else int(v.attr("q_num_heads"))
    head_size = q[-1] if len(q) == 4 else q[-1] // heads
    scores = math.prod(q) // head_size * kv_len
    return 2 * kv_len * (math.prod(q) + v.onumel()) + SOFTMAX_PER_ELEMENT * scores


# Recurrent cells: gates, and pointwise FLOPs per hidden unit per step.
_RNN_CELLS = {
    "RNN": (1, TRANSCENDENTAL),  # h = tanh(...)
    "GRU": (3, 3 * TRANSCENDENTAL + 5),  # 2 sigmoid + tanh; reset product, 1-z, blend
    "LSTM": (4, 5 * TRANSCENDENTAL + 4),  # 3 sigmoid + 2 tanh; c = f*c + i*g, h = o*tanh(c)
}


@flops(*_RNN_CELLS)
def _recurrent(v: _View) -> int:
    """Per step and direction: X W^T and H R^T (2*G*H*(I+H) per batch row), biases, pointwise."""
    gates, pointwise = _RNN_CELLS[v.node.op]
    x = v.ishape(0)
    seq, batch = (x[1], x[0]) if v.attr("layout", 0) else (x[0], x[1])
    directions, gh, input_size = v.ishape(1)
    hidden = gh // gates
    per_row = 2 * gh * (input_size + hidden) + (2 * gh if v.has_input(3) else 0) + pointwise * hidden
    return directions * seq * batch * per_row


# -- control flow: the body's FLOPs, as often as it runs ----------------------------------------

@flops("If")
def _if(v: _View) -> int:
    return max(v.subgraph_flops(v.attr("then_branch")), v.subgraph_flops(v.attr("else_branch")))


@flops("Scan")
def _scan(v: _View) -> int:
    if v.scope.graph.opset_of("") < 9:
        raise _Unknown("opset-8 Scan (batched layout) is not modelled")
    n_scan = int(v.attr("num_scan_inputs"))
    first_scan = v.n_inputs - n_scan
    axes = v.attr("scan_input_axes") or (0,) * n_scan
    return v.ishape(first_scan)[axes[0]] * v.subgraph_flops(v.attr("body"))


@flops("Loop")
def _loop(v: _View) -> int:
    trips = int(v.constant_input(0).reshape(-1)[0])  # a while-loop without a constant M is unknown
    return trips * v.subgraph_flops(v.attr("body"))


# -- computing costs ----------------------------------------------------------------------------

def constant_containers(graph: Graph) -> set[str]:
    """Names of parameters and of outputs of constant-producing nodes (deterministic default-
    domain nodes without subgraphs that read only constants)."""
    constant = set(graph.parameters)
    for node in graph.nodes:
        if _is_constant_node(node, constant):
            constant.update(o for o in node.outputs if o)
    return constant


def _is_constant_node(node: Node, constant: set[str]) -> bool:
    return (node.domain == "" and node.op not in NONDETERMINISTIC
            and next(iter(_subgraphs(node)), None) is None
            and all(i in constant for i in node.present_inputs))


def _subgraphs(node: Node) -> Iterable[Graph]:
    for value in node.attrs.values():
        yield from (v for v in (value if isinstance(value, tuple) else (value,)) if isinstance(v, Graph))


def captured_names(graph: Graph) -> set[str]:
    """Names a (sub)graph reads from enclosing scopes: used in it, defined nowhere in it."""
    used = set().union(*(reads(n) for n in graph.nodes), graph.outputs)
    return used - set(graph.containers)


def reads(node: Node) -> tuple[str, ...]:
    """Distinct containers a node reads: its inputs plus what its subgraphs capture."""
    captured = (name for body in _subgraphs(node) for name in sorted(captured_names(body)))
    return tuple(dict.fromkeys((*node.present_inputs, *captured)))


class _Costing:
    """Cost computation for one graph (and, through ``outer``, the scopes around a subgraph)."""

    def __init__(self, graph: Graph, bindings: Mapping[str, int] | None, outer: "_Costing | None" = None):
        self.graph = graph
        self.bindings = dict(bindings or {})
        self.outer = outer
        self.constants = constant_containers(graph)
        self.readers = self._count_readers()

    def type_of(self, name: str) -> TensorType | None:
        t = self.graph.type_of(name)
        if t is None:
            return self.outer.type_of(name) if self.outer else None
        return t.specialize(self.bindings)

    def is_constant(self, name: str) -> bool:
        if name in self.graph.containers:
            return name in self.constants
        return bool(self.outer) and self.outer.is_constant(name)

    def constant_value(self, name: str) -> np.ndarray | None:
        c = self.graph.containers.get(name)
        if c is None:
            return self.outer.constant_value(name) if self.outer else None
        return c.data

    def nbytes(self, names: Iterable[str]) -> int | None:
        sizes = [self.type_of(n) for n in dict.fromkeys(n for n in names if n)]
        if any(t is None or t.nbytes is None for t in sizes):
            return None
        return sum(t.nbytes for t in sizes)

    def subgraph_flops(self, body: Graph) -> int:
        cost = _Costing(body, self.bindings, outer=self).graph_cost()
        if not cost.complete:
            raise _Unknown(f"subgraph {body.name}")
        return cost.total_flops

    def flops_of(self, node: Node) -> tuple[int | None, bool]:
        formula = _FORMULAS.get(node.op) if node.domain == "" else None
        try:  # a malformed node (say, a required attribute missing) is unknown, not a crash
            return (formula or per_output_element(1))(_View(node, self)), formula is not None
        except (_Unknown, KeyError, IndexError, TypeError, ValueError, ZeroDivisionError):
            return None, formula is not None

    def node_cost(self, node: Node) -> OpCost:
        if node.domain == "dcopt.loop":
            return self._loop_node_cost(node)
        flop_count, modelled = self.flops_of(node)
        read = self.nbytes(reads(node))
        written = self.nbytes(o for o in node.outputs if self.is_live(o))
        params = self.nbytes(i for i in reads(node) if self.is_constant(i))
        known = None not in (flop_count, read, written)
        constant = _is_constant_node(node, self.constants)
        return OpCost(node.label, node.op if not node.domain else f"{node.domain}.{node.op}", flop_count, read,
                      written, params, known, modelled, constant)

    def _loop_node_cost(self, node: Node) -> OpCost:
        """Loop-level nodes: bytes from their memlets (exactly the elements they touch)."""
        from dcopt.ir import loops

        moved = loops.memlet_cost(self.graph, node, self.bindings)
        flop_count = loops.loop_flops(self.graph, node, self.bindings, TRANSCENDENTAL)
        read = None if moved is None else moved.bytes_read
        written = None if moved is None else moved.bytes_written
        params = self.nbytes(i for i in reads(node) if self.is_constant(i))
        known = None not in (flop_count, read, written)
        return OpCost(node.label, f"{node.domain}.{node.op}", flop_count, read, written, params, known, True,
                      _is_constant_node(node, self.constants))

    def graph_cost(self) -> GraphCost:
        costs = [self.node_cost(n) for n in self.graph.nodes]
        runtime = [c for c in costs if not c.constant]
        known = [c for c in runtime if c.known]
        weights = self._weights_read_at_runtime()
        return GraphCost(
            nodes=costs,
            total_flops=sum(c.flops for c in known),
            total_bytes_read=sum(c.bytes_read for c in known),
            total_bytes_written=sum(c.bytes_written for c in known),
            unknown_nodes=len(runtime) - len(known),
            constant_nodes=len(costs) - len(runtime),
            parameter_count=sum(c.data.size for c in self.graph.parameters.values()),
            parameter_bytes=sum(c.data.nbytes for c in self.graph.parameters.values()),
            weight_count=sum(self.type_of(n).numel or 0 for n in weights),
            weight_bytes=sum(self.type_of(n).nbytes or 0 for n in weights),
            input_bytes=self.nbytes(self.graph.inputs),
            output_bytes=self.nbytes(self.graph.outputs),
            transient_bytes=self._transient_bytes(),
            by_op=_aggregate(runtime),
        )

    def _count_readers(self) -> dict[str, int]:
        """Container name -> number of run-time (not constant-producing) nodes reading it."""
        readers: dict[str, int] = {}
        for node in self.graph.nodes:
            if not _is_constant_node(node, self.constants):
                for name in reads(node):
                    readers[name] = readers.get(name, 0) + 1
        return readers

    def is_live(self, name: str) -> bool:
        """Whether an output is used at all (read by a node or a graph output). Dead outputs
        (e.g. an unused Dropout mask) are not materialized, so they cost no bytes."""
        return bool(name) and (name in self.readers or name in self.graph.outputs or name in self.constants)

    def _weights_read_at_runtime(self) -> list[str]:
        return [n for n in self.graph.containers if n in self.constants
                and (n in self.readers or n in self.graph.outputs) and self.type_of(n) is not None]

    def _transient_bytes(self) -> int:
        total = 0
        for name, readers in self.readers.items():
            t = self.type_of(name)
            if (name in self.graph.containers and self.graph.kind(name) is Kind.TRANSIENT
                    and name not in self.constants and t is not None and t.nbytes is not None):
                total += t.nbytes * (1 + readers)
        return total


def _aggregate(costs: Iterable[OpCost]) -> dict[str, OpTypeCost]:
    by_op: dict[str, OpTypeCost] = {}
    for c in costs:
        agg = by_op.setdefault(c.op, OpTypeCost())
        agg.count += 1
        if c.known:
            agg.flops += c.flops
            agg.bytes += c.bytes_moved
        else:
            agg.unknown += 1
    return dict(sorted(by_op.items(), key=lambda kv: (-kv[1].flops, -kv[1].count, kv[0])))


def node_cost(graph: Graph, node: Node, bindings: Mapping[str, int] | None = None) -> OpCost:
    """Cost of one node of ``graph`` (symbolic dims specialized by ``bindings``)."""
    return _Costing(graph, bindings).node_cost(node)


def graph_cost(graph: Graph, bindings: Mapping[str, int] | None = None) -> GraphCost:
    """Per-node costs, run-time totals and a per-op-type aggregation for ``graph``."""
    return _Costing(graph, bindings).graph_cost()
