"""``swap_activation``: replace every activation of one kind by another (an idea patch).

"Would this CNN do better with GELU?" is a one-line experiment: ``swap_activation?from=Relu&to=Gelu``.
The target is emitted as its ONNX op when the model's opset has it; otherwise it is built from
primitive ops the model's opset does have, so the patch never has to raise an opset:

=========  ================  =======================================
to         ONNX op since     primitive form below that opset
=========  ================  =======================================
Gelu       20                x * 0.5 * (1 + Erf(x / sqrt(2)))
HardSwish  14                x * HardSigmoid(x, alpha=1/6, beta=0.5)
Mish       18                x * Tanh(Softplus(x))
Silu       (none in ONNX)    x * Sigmoid(x)
=========  ================  =======================================

Relu, LeakyRelu, Elu, Selu, Sigmoid, Tanh, Softplus and Softsign exist in every supported opset.
Only float activations are swapped (a ``Relu`` on integers is refused: most targets are float-only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from dcopt.ir.graph import Graph
from dcopt.passes.match import Match
from dcopt.passes.pattern import Op, Var
from dcopt.passes.patches.edit import float_value
from dcopt.passes.patches.registry import Param, patch
from dcopt.passes.rewrite import RewriteBuilder, RewriteRule

__all__ = ["ACTIVATIONS", "Activation", "emit_activation", "swap_activation"]

Build = Callable[[RewriteBuilder, str, str], str]  # (builder, x, site name) -> output value


def _times(op: Build) -> Build:
    """x * op(x): the gated form shared by Silu, HardSwish and Mish."""
    return lambda rb, x, site: rb.op("Mul", [x, op(rb, x, site)], like=x, name=f"{site}/gate")


def _gelu(rb: RewriteBuilder, x: str, site: str) -> str:
    scaled = rb.op("Mul", [x, rb.const(1 / math.sqrt(2), like=x, name="inv_sqrt2")], like=x, name=f"{site}/scale")
    erf = rb.op("Erf", [scaled], like=x, name=f"{site}/erf")
    one_plus = rb.op("Add", [erf, rb.const(1.0, like=x, name="one")], like=x, name=f"{site}/one_plus")
    half_x = rb.op("Mul", [x, rb.const(0.5, like=x, name="half")], like=x, name=f"{site}/half")
    return rb.op("Mul", [half_x, one_plus], like=x, name=f"{site}/gelu")


@dataclass(frozen=True)
class Activation:
    """An activation: the opset its ONNX op appeared in (None: no ONNX op), and how to build it
    from older primitive ops."""

    name: str
    since: int | None = 1
    primitive: Build | None = None


ACTIVATIONS: dict[str, Activation] = {a.name: a for a in [
    Activation("Relu"), Activation("LeakyRelu"), Activation("Elu"), Activation("Selu"), Activation("Sigmoid"),
    Activation("Tanh"), Activation("Softplus"), Activation("Softsign"),
    Activation("Gelu", 20, _gelu),
    Activation("HardSwish", 14, _times(lambda rb, x, s: rb.op("HardSigmoid", [x], like=x, name=f"{s}/hard_sigmoid",
                                                                alpha=1 / 6, beta=0.5))),
    Activation("Mish", 18, _times(lambda rb, x, s: rb.op("Tanh", [rb.op("Softplus", [x], like=x, name=f"{s}/softplus")],
                                                         like=x, name=f"{s}/tanh"))),
    Activation("Silu", None, _times(lambda rb, x, s: rb.op("Sigmoid", [x], like=x, name=f"{s}/sigmoid"))),
]}
NATIVE = tuple(name for name, a in ACTIVATIONS.items() if a.since is not None)


def emit_activation(graph: Graph, rb: RewriteBuilder, name: str, x: str, site: str) -> str:
    """Add activation ``name`` applied to ``x``: its ONNX op if the graph's opset has it, else
    its primitive form. Returns the output value (typed like ``x``)."""
    act = ACTIVATIONS[name]
    if act.since is not None and graph.opset_of("") >= act.since:
        return rb.op(name, [x], like=x, name=site)
    return act.primitive(rb, x, site)


def _check(graph: Graph, m: Match):
    if not float_value(graph, m.value("x")):
        return m.fail(f"input '{m.value('x')}' is not known to be floating point", m.root)
    return None


def _different(args: dict) -> str | None:
    return f"from and to are both {args['from']}: nothing to swap" if args["from"] == args["to"] else None


@patch("swap_activation", kind="idea", check_args=_different, params=[
    Param("from", str, "Relu", "the activation op to replace", choices=NATIVE),
    Param("to", str, "Gelu", "the activation to put in its place (primitive ops if the opset lacks it)",
          choices=tuple(ACTIVATIONS)),
])
def swap_activation(graph, *, from_, to):
    """Replace every `from` activation by `to` (built from primitive ops if the model's opset lacks `to`)."""

    def rewrite(graph: Graph, m: Match):
        rb = RewriteBuilder(graph)
        return rb.replace({m.root_value: emit_activation(graph, rb, to, m.value("x"), m.root.name)})

    # Attributes of the old op (LeakyRelu's alpha, ...) do not carry over: the new op takes its defaults.
    return RewriteRule(f"{from_}-to-{to}", Op(from_, Var("x")), rewrite, _check, f"{from_}(x) -> {to}(x)")
