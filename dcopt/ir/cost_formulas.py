"""FLOP formulas of the cost model (:mod:`dcopt.ir.cost`): one per op, in a registry.

A formula is registered for the (default-domain) ops it covers with ``@flops("Conv")`` and
receives a :class:`_View` of the node: static shapes (a dim that is not static raises
:class:`_Unknown`, making the node's cost unknown), attributes with ONNX schema defaults filled
in, constant input values and subgraph FLOPs. A multiply-add is 2 FLOPs; transcendental
functions cost :data:`TRANSCENDENTAL` each; pure data movement is 0 FLOPs.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

import numpy as np

from dcopt.ir.graph import Graph, Node
from dcopt.ops.registry import schema_defaults

if TYPE_CHECKING:
    from dcopt.ir.cost import _Costing

#: FLOPs charged for one transcendental function evaluation (exp, log, tanh, erf, sin, ...).
#: Hardware varies widely (a few to ~20 instructions); 8 is a middle-of-the-road constant.
TRANSCENDENTAL = 8

#: FLOPs per element of the normalizations (the statistics pass plus the affine transform).
BATCHNORM_PER_ELEMENT = 4  # (x - mean) / sqrt(var + eps) * scale + bias, statistics given
NORMALIZATION_PER_ELEMENT = 8  # mean, variance (3), then subtract, divide, scale, shift
SOFTMAX_PER_ELEMENT = 5  # max, subtract, exp, sum, divide: the customary ~5 per element


class _Unknown(Exception):
    """A size the formula needs is not static."""


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
