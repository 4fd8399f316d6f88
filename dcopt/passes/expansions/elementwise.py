"""Elementwise ops -> one map over the result's index space, inputs read through broadcasting memlets.

Each op is one line: a tasklet expression over connectors ``a, b, c, ...`` with ``{attr}``
placeholders filled from the node's attributes (ONNX schema defaults included). The numerically
delicate ones use the stable forms the reference uses too (softplus as
``max(a, 0) + log1p(exp(-abs(a)))``, elu through ``expm1``).

Dtypes: the float-only ops refuse integer inputs (integer Div truncates and Pow of integers has
its own rules, neither worth a tasklet yet); arithmetic that means the same on integers (Add,
Sub, Mul, Neg, Abs, Relu, Max, Min, Sum) and comparisons, logic, Where and Cast take any numeric
dtype. bfloat16/float8 (stored as ml_dtypes) are left alone: a tasklet would compute them in a
wider type than the reference.
"""

from __future__ import annotations

from dcopt.passes.common import dropout_is_training
from dcopt.passes.expand import LoopBuilder, Refused, expansion, fmt

FLOATS = ("float16", "float32", "float64")
NUMBERS = FLOATS + ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
BOOLS = ("bool",)

UNARY = {
    "Relu": "max(a, 0)", "Abs": "abs(a)", "Neg": "-a", "Identity": "a",
    "Exp": "exp(a)", "Log": "log(a)", "Sqrt": "sqrt(a)", "Tanh": "tanh(a)", "Erf": "erf(a)",
    "Sin": "sin(a)", "Cos": "cos(a)", "Floor": "floor(a)", "Ceil": "ceil(a)", "Reciprocal": "1.0 / a",
    "Sigmoid": "1.0 / (1.0 + exp(-a))", "Softsign": "a / (1.0 + abs(a))",
    "Softplus": "max(a, 0.0) + log1p(exp(-abs(a)))",
    "Mish": "a * tanh(max(a, 0.0) + log1p(exp(-abs(a))))",
    "HardSwish": "a * max(0.0, min(1.0, a / 6.0 + 0.5))",
    "HardSigmoid": "max(0.0, min(1.0, {alpha} * a + {beta}))",
    "LeakyRelu": "a if a >= 0 else a * {alpha}",
    "ThresholdedRelu": "a if a > {alpha} else 0.0",
    "Elu": "a if a > 0 else {alpha} * expm1(a)",
    "Selu": "{gamma} * (a if a > 0 else {alpha} * expm1(a))",
    "Celu": "max(a, 0.0) + min(0.0, {alpha} * expm1(a / {alpha}))",
    "Shrink": "a + {bias} if a < -{lambd} else (a - {bias} if a > {lambd} else 0.0)",
    "Swish": "a / (1.0 + exp(-{alpha} * a))",
    "IsNaN": "isnan(a)", "Not": "not a",
}
GELU = {"none": "0.5 * a * (1.0 + erf(a * 0.7071067811865476))",
        "tanh": "0.5 * a * (1.0 + tanh(0.7978845608028654 * (a + 0.044715 * a * a * a)))"}
BINARY = {
    "Add": "a + b", "Sub": "a - b", "Mul": "a * b", "Div": "a / b", "Pow": "pow(a, b)",
    "PRelu": "a if a >= 0 else a * b",
    "Equal": "a == b", "Less": "a < b", "LessOrEqual": "a <= b", "Greater": "a > b", "GreaterOrEqual": "a >= b",
    "And": "a and b", "Or": "a or b", "Xor": "a != b",
}
#: ops whose tasklet means the same on integers as on floats
INTEGER_SAFE = {"Relu", "Abs", "Neg", "Identity", "Add", "Sub", "Mul", "Max", "Min", "Sum",
                "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual"}
LOGIC = {"Not", "And", "Or", "Xor"}

CONNECTORS = "abcdefghijklmnopqrstuvwxyz"


def _allowed(op: str) -> tuple[str, ...]:
    if op in LOGIC:
        return BOOLS
    if op == "Identity":
        return NUMBERS + BOOLS
    return NUMBERS if op in INTEGER_SAFE else FLOATS


def _fill(b: LoopBuilder, template: str) -> str:
    """Substitute ``{attr}`` placeholders with the node's float attributes."""
    names = [part.split("}")[0] for part in template.split("{")[1:]]
    return template.format(**{n: fmt(b.attr(n)) for n in names})


def _inputs(b: LoopBuilder) -> dict[str, str]:
    present = [name for name in b.node.inputs if name]
    if len(present) != len(b.node.inputs):
        raise Refused("an input is omitted")
    return dict(zip(CONNECTORS, present))


@expansion(*UNARY, *BINARY)
def simple(graph, node):
    b = LoopBuilder(graph, node)
    inputs = _inputs(b)
    b.require_dtype(*inputs.values(), allowed=_allowed(node.op))
    table = UNARY if node.op in UNARY else BINARY
    if node.op == "Pow" and b.dtype(inputs["b"]) != b.dtype(inputs["a"]):
        raise Refused("Pow with an exponent of another dtype")
    b.elementwise(_fill(b, table[node.op]), inputs, b.output())
    return b.nodes


@expansion("Gelu")
def gelu(graph, node):
    b = LoopBuilder(graph, node)
    inputs = _inputs(b)
    b.require_dtype(*inputs.values())
    approximate = b.attr("approximate", "none")
    if approximate not in GELU:
        raise Refused(f"unknown approximate={approximate!r}")
    b.elementwise(GELU[approximate], inputs, b.output())
    return b.nodes


@expansion("Max", "Min", "Sum", "Mean")
def variadic(graph, node):
    b = LoopBuilder(graph, node)
    inputs = _inputs(b)
    b.require_dtype(*inputs.values(), allowed=_allowed(node.op))
    conns = list(inputs)
    if len(conns) == 1:
        code = "a"
    elif node.op in ("Max", "Min"):
        code = f"{node.op.lower()}({', '.join(conns)})"
    else:
        code = " + ".join(conns) if node.op == "Sum" else f"({' + '.join(conns)}) / {len(conns)}"
    b.elementwise(code, inputs, b.output())
    return b.nodes


@expansion("Where")
def where(graph, node):
    b = LoopBuilder(graph, node)
    inputs = _inputs(b)
    b.require_dtype(inputs["a"], allowed=BOOLS)
    b.require_dtype(inputs["b"], inputs["c"], allowed=NUMBERS + BOOLS)
    b.elementwise("b if a else c", inputs, b.output())
    return b.nodes


@expansion("Clip")
def clip(graph, node):
    """Bounds that are constants are written into the tasklet; run-time bounds are read."""
    b = LoopBuilder(graph, node)
    x = b.input(0)
    b.require_dtype(x, allowed=NUMBERS)
    inputs, code = {"a": x}, "a"
    for i, (attr, fn) in enumerate((("min", "max"), ("max", "min")), start=1):
        name = b.input(i, optional=True) if b.opset >= 11 else None
        value = b.constant(name) if name else b.attr(attr) if b.opset < 11 else None
        if name and value is None:
            conn = "lo" if attr == "min" else "hi"
            inputs[conn] = name
            code = f"{fn}({code}, {conn})"
        elif value is not None:
            number = float(value.reshape(-1)[0]) if hasattr(value, "reshape") else float(value)
            code = f"{fn}({code}, {fmt(number)})"
    b.elementwise(code, inputs, b.output())
    return b.nodes


@expansion("Cast", "CastLike")
def cast(graph, node):
    """The map stores into the target dtype; only a cast to bool needs a comparison."""
    b = LoopBuilder(graph, node)
    x, y = b.input(0), b.output()
    b.require_dtype(x, y, allowed=NUMBERS + BOOLS)
    b.elementwise("a != 0" if b.dtype(y) == "bool" and b.dtype(x) != "bool" else "a", {"a": x}, y)
    return b.nodes


@expansion("Dropout")
def dropout(graph, node):
    """Dropout at inference is a copy; a mask somebody reads, or possible training mode, keeps the op."""
    b = LoopBuilder(graph, node)
    if dropout_is_training(graph, node) is not False:
        raise Refused("Dropout may be in training mode")
    mask = b.output(1)
    if mask and (mask in graph.outputs or graph.consumers(mask)):
        raise Refused("the mask output is used")
    b.elementwise("a", {"a": b.input(0)}, b.output())
    return b.nodes
