"""Exact clean-ups exporters leave behind: ``remove_dropout_identity`` and
``fold_transpose_into_matmul``.

``remove_dropout_identity`` removes Dropout in inference mode (its mask output unused) and
Identity nodes, rewiring their readers to the input. Whether a node is such a no-op is decided
by the very rules of the ``remove-noops`` pass (:data:`dcopt.passes.remove_noops.RULES`), so the
two never disagree. A node whose output is a graph output is kept: removing it would rename the
output (the pass does that renaming; a patch keeps the model's interface as it is).

``fold_transpose_into_matmul`` removes a Transpose that swaps the last two axes of a MatMul or
Gemm operand:

* a constant operand (a weight exported as ``MatMul(x, Transpose(W))`` without constant
  folding) is stored transposed instead: ``MatMul(x, W^T)``;
* a computed 2-D operand is absorbed by Gemm's ``transA``/``transB``: ``MatMul(A, Transpose(B))``
  becomes ``Gemm(A, B, transB=1)``, and a Transpose feeding a Gemm flips its flag.

A computed operand of a batched (rank > 2) MatMul — attention's ``Q @ K^T`` — cannot be
absorbed: Gemm is 2-D only. That is refused with the reason.
"""

from __future__ import annotations

import numpy as np

from dcopt.ir.graph import Graph
from dcopt.passes.match import Match
from dcopt.passes.pattern import Alt, Op, Var
from dcopt.passes.patches.edit import float_value
from dcopt.passes.patches.registry import patch
from dcopt.passes.remove_noops import RULES as NOOP_RULES
from dcopt.passes.rewrite import RewriteBuilder, RewriteRule, RuleSet

__all__ = ["fold_transpose_into_matmul", "remove_dropout_identity"]


# -- remove_dropout_identity ----------------------------------------------------------------------


class _Used:
    """``name in used``: asks the rewrite engine's live index (the remove-noops rules take a set)."""

    def __init__(self, m: Match):
        self.index = m.index

    def __contains__(self, name: str) -> bool:
        return self.index.is_used(name)


def _noop_check(graph: Graph, m: Match):
    node = m.root
    verdict = NOOP_RULES[node.op](graph, node, _Used(m))
    if verdict is None or verdict.forward is None:
        return m.fail(verdict.reason if verdict is not None else f"this {node.op} is not a no-op", node)
    if m.root_value in m.index.protected:
        return m.fail(f"its output '{m.root_value}' is a graph output (or read inside a subgraph); "
                      "removing the node would rename it", node)
    return None


def _forward(graph: Graph, m: Match):
    return RewriteBuilder(graph).replace({m.root_value: m.value("x")})


@patch("remove_dropout_identity", kind="exact")
def remove_dropout_identity(graph):
    """Remove inference-mode Dropout and Identity nodes (readers read the input directly).

    Keeps Dropout that may run in training mode or whose mask is used, and nodes that write a
    graph output.
    """
    return RuleSet([RewriteRule("drop-noop", Op(("Dropout", "Identity"), Var("x"), ...), _forward, _noop_check,
                                "Dropout (inference) / Identity -> its input")])


# -- fold_transpose_into_matmul -------------------------------------------------------------------


def _swap_last_two(perm, rank: int | None) -> bool:
    """Whether Transpose's ``perm`` (None: reverse all axes) swaps exactly the last two axes."""
    if rank is None:
        return False
    if perm is None:
        return rank == 2
    return tuple(perm) == tuple(range(rank - 2)) + (rank - 1, rank - 2)


def _operand(side: str) -> Alt:
    """An operand that may be a Transpose (captured as ``t<side>``) of value ``<side>``."""
    return Alt(Op("Transpose", Var(side), name=f"t{side}", shared=True), Var(side))


MATMUL = Op("MatMul", _operand("a"), _operand("b"), name="mm")
GEMM = Op("Gemm", _operand("a"), _operand("b"), ..., name="gemm")


def _transposed(graph: Graph, m: Match, side: str) -> bool | str:
    """True when operand ``side`` is a last-two-axes Transpose, False when not transposed, or
    a reason when it is a Transpose that cannot fold."""
    key = f"t{side}"
    if key not in m:
        return False
    node = m.node(key)
    t = graph.type_of(m.value(side))
    rank = None if t is None or t.shape is None else len(t.shape)
    if not _swap_last_two(node.attrs.get("perm"), rank):
        return (f"Transpose perm {list(node.attrs['perm']) if 'perm' in node.attrs else 'reversed'} of a rank-"
                f"{rank if rank is not None else '?'} tensor does not swap just the last two axes")
    return True


def _check_matmul(graph: Graph, m: Match):
    problem = _check_gemm(graph, m)  # every Transpose present swaps the last two axes, and one is
    if problem is not None:
        return problem
    if any(f"t{s}" in m and m.index.constant(m.value(s)) is not None for s in "ab"):
        return None  # a constant operand: stored transposed, whatever the rank
    ranks = [graph.type_of(m.value(s)).rank if graph.type_of(m.value(s)) else None for s in "ab"]
    if ranks != [2, 2]:
        return m.fail(f"the transposed operand is computed and the MatMul is batched (operand ranks {ranks}); "
                      "Gemm, which could absorb the Transpose, takes 2-D operands only", m.root)
    if not float_value(graph, m.value("a")):
        return m.fail("Gemm needs floating-point operands", m.root)
    return None


def _fold_matmul(cache: dict[str, str]):
    """The MatMul rewrite; ``cache`` maps a constant to its stored transpose, so a weight read
    through one Transpose by several MatMuls (tied weights) is transposed once."""

    def rewrite(graph: Graph, m: Match):
        rb = RewriteBuilder(graph)
        operands, trans = [], []
        for s in "ab":
            value = m.value(s)
            data = m.index.constant(value) if f"t{s}" in m else None
            if data is not None and value not in cache:
                cache[value] = rb.const(np.swapaxes(data, -1, -2), name=f"{value}.T")
            operands.append(cache[value] if data is not None else value)
            trans.append(int(f"t{s}" in m and data is None))
        if any(trans):
            out = rb.op("Gemm", operands, like=m.root_value, name=m.root.name, transA=trans[0], transB=trans[1])
        else:
            out = rb.op("MatMul", operands, like=m.root_value, name=m.root.name)
        return rb.replace({m.root_value: out})

    return rewrite


def _check_gemm(graph: Graph, m: Match):
    flags = {s: _transposed(graph, m, s) for s in "ab"}
    for s, f in flags.items():
        if isinstance(f, str):
            return m.fail(f, m.node(f"t{s}"))
    return None if any(flags.values()) else m.fail("no operand is a Transpose", m.root)


def _fold_gemm(graph: Graph, m: Match):
    gemm = m.node("gemm")
    rb = RewriteBuilder(graph)
    attrs = dict(gemm.attrs)
    for s, flag in (("a", "transA"), ("b", "transB")):
        if f"t{s}" in m:
            attrs[flag] = 1 - int(attrs.get(flag, 0))
    out = rb.op("Gemm", [m.value("a"), m.value("b"), *gemm.inputs[2:]], like=m.root_value, name=gemm.name, attrs=attrs)
    return rb.replace({m.root_value: out})


@patch("fold_transpose_into_matmul", kind="exact")
def fold_transpose_into_matmul(graph):
    """Fold a last-two-axes Transpose into the MatMul/Gemm it feeds (transposed constant or Gemm transA/transB).

    Saves a full copy of the operand per call (and, for constants, per run).
    """
    return RuleSet([
        RewriteRule("transpose-into-matmul", MATMUL, _fold_matmul({}), _check_matmul,
                    "MatMul(A, Transpose(W)) -> MatMul(A, W^T) / Gemm(A, B, transB=1)"),
        RewriteRule("transpose-into-gemm", GEMM, _fold_gemm, _check_gemm, "Gemm(Transpose(A), B) -> Gemm(A, B, transA=1)"),
    ])
