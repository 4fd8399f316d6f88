"""``prune_attention_heads``: silence the weakest attention heads (an idea patch).

The attention core is found with a pattern rooted at the context MatMul, in the shapes the
common exporters write (eager BERT, SDPA-decomposed GPT-2, hand-written blocks)::

    q, k, v  = projections, each Reshape(·, [B, S, H, D]) then Transpose
    scores   = MatMul(Q [* c], K^T [* c]) [* or / c] [+ mask]     K^T: perm (0,2,3,1), or two Transposes
    probs    = Softmax(scores) [guarded by Where(IsNaN(probs), 0, probs)]
    context  = MatMul(probs, V)

Each of ``q``, ``k``, ``v`` is traced back to the constant weights that make it — ``MatMul(x, W)
[+ b]``, or ``Gemm(x, W, b)`` whose output is ``Split`` into Q, K and V (GPT-2's fused c_attn) —
which gives every head its columns of W (``transB`` honoured) and entries of b.

Heads are ranked by the L2 norm of their Q, K and V weights together; the ``ratio`` weakest
(rounded down, at least one head always kept) are *zeroed*: their Q, K and V weight columns and
biases become 0. Their queries and keys then give uniform attention over zero values, so each
pruned head contributes exactly nothing to the output projection. Zeroing keeps every shape,
so no Reshape, Split or output projection has to change; the FLOPs stay, the parameters become
zeros (sparse, compressible, and the heads a later *physical* removal would drop). Physical
removal — shrinking the projections, head reshapes and output projection — is not done.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dcopt.ir.graph import Graph, Node
from dcopt.passes.match import GraphIndex, Match, MatchFailure, Predicate
from dcopt.passes.pattern import Alt, Const, Op, Var, match_value
from dcopt.passes.patches.edit import drop_unread, new_param
from dcopt.passes.patches.registry import Param, PatchOutcome, patch

__all__ = ["ATTENTION", "prune_attention_heads"]


def _heads(value: str, perm: tuple[int, ...]) -> Op:
    """Reshape(value, [B, S, H, D]) then Transpose(perm)."""
    return Op("Transpose", Op("Reshape", Var(value), Var(const=True), name=f"{value}_heads"), attrs={"perm": perm})


def _maybe_scaled(p) -> Alt:
    return Alt(Op(("Mul", "Div"), p, Const()), p)


_KT = Alt(_heads("k", (0, 2, 3, 1)), Op("Transpose", _heads("k", (0, 2, 1, 3)), attrs={"perm": (0, 1, 3, 2)}))
_SCORES = _maybe_scaled(Op("MatMul", _maybe_scaled(_heads("q", (0, 2, 1, 3))), _maybe_scaled(_KT)))
_PROBS = Op("Softmax", Alt(Op("Add", _SCORES, Var("mask")), _SCORES), name="softmax")
ATTENTION = Op("MatMul", Alt(_PROBS, Op("Where", Op("IsNaN", _PROBS), Const(), _PROBS)), _heads("v", (0, 2, 1, 3)),
               name="context")


@dataclass(frozen=True)
class Projection:
    """Where one of Q/K/V comes from: ``node`` holds the weight at input ``weight`` (and the bias
    at ``bias_node``'s input ``bias``); this projection is columns [offset, offset + width)."""

    node: Node
    weight: int
    bias_node: Node | None
    bias: int
    offset: int
    width: int
    trans_b: bool

    def columns(self, head: int, head_dim: int) -> slice:
        start = self.offset + head * head_dim
        return slice(start, start + head_dim)


def trace_projection(graph: Graph, index: GraphIndex, value: str) -> Projection | str:
    """Follow ``value`` back through Split (last axis), a shape-only Reshape and a bias Add to
    the MatMul/Gemm with constant weights that computes it; or say where the trail went cold."""
    t = graph.type_of(value)
    if t is None or t.shape is None or not isinstance(t.shape[-1], int):
        return f"the width of '{value}' is unknown"
    width, offset, bias_node, bias = t.shape[-1], 0, None, -1
    node = index.producer(value)
    if node is not None and node.op == "Split":
        sizes = _split_sizes(graph, index, node)
        if sizes is None:
            return f"Split '{node.label}' does not split the last axis into known sizes"
        offset, value = sum(sizes[:node.outputs.index(value)]), node.inputs[0]
        node = index.producer(value)
    if node is not None and node.op == "Reshape":
        src = graph.type_of(node.inputs[0])
        if src is None or src.shape is None or src.shape[-1] != graph.type_of(value).shape[-1]:
            return f"Reshape '{node.label}' changes the feature axis"
        node = index.producer(node.inputs[0])
    if node is not None and node.op == "Add":
        consts = [i for i, v in enumerate(node.inputs) if index.constant(v) is not None]
        if len(consts) != 1:
            return f"'{node.label}' (Add) is not a bias add"
        bias_node, bias = node, consts[0]
        node = index.producer(node.inputs[1 - consts[0]])
    if node is None or node.op not in ("MatMul", "Gemm") or index.constant(node.inputs[1]) is None:
        return f"'{value}' is not computed by MatMul/Gemm with constant weights"
    w = index.constant(node.inputs[1])
    trans_b = node.op == "Gemm" and bool(node.attrs.get("transB", 0))
    if w.ndim != 2 or (w.shape[0] if trans_b else w.shape[1]) < offset + width:
        return f"weights of '{node.label}' have shape {list(w.shape)}, too small for columns {offset}:{offset + width}"
    if node.op == "Gemm" and len(node.inputs) > 2 and node.inputs[2]:
        if index.constant(node.inputs[2]) is None or bias_node is not None:
            return f"'{node.label}' has a computed or second bias"
        bias_node, bias = node, 2
    return Projection(node, 1, bias_node, bias, offset, width, trans_b)


def _split_sizes(graph: Graph, index: GraphIndex, node: Node) -> list[int] | None:
    rank = graph.type_of(node.inputs[0]).rank if graph.type_of(node.inputs[0]) else None
    if rank is None or node.attrs.get("axis", 0) % rank != rank - 1:
        return None
    sizes = node.attrs.get("split") or (index.constant(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] else None)
    if sizes is None:
        whole = graph.type_of(node.inputs[0]).shape[-1]
        return None if not isinstance(whole, int) else [whole // len(node.outputs)] * len(node.outputs)
    return [int(s) for s in np.asarray(sizes).reshape(-1)]


def _head_dim(graph: Graph, m: Match, name: str) -> int | None:
    shape = m.index.constant(m.node(f"{name}_heads").inputs[1])
    d = int(shape[-1]) if shape is not None and len(shape) == 4 and shape[-1] > 0 else None
    out = graph.type_of(m.node(f"{name}_heads").outputs[0])
    return d or (out.shape[-1] if out and out.shape and isinstance(out.shape[-1], int) else None)


def _plan_site(graph: Graph, m: Match, ratio: float) -> tuple[dict, list[int], int] | str:
    """(projections by role, heads to zero, head count) for one attention site, or a reason."""
    projections = {}
    for role in "qkv":
        p = trace_projection(graph, m.index, m.value(role))
        if isinstance(p, str):
            return f"{role.upper()}: {p}"
        projections[role] = p
    d = _head_dim(graph, m, "q")
    widths = {p.width for p in projections.values()}
    if d is None or len(widths) != 1 or next(iter(widths)) % d:
        return f"cannot tell the head layout (head size {d}, projection widths {sorted(widths)})"
    heads = next(iter(widths)) // d
    n_prune = min(int(np.floor(ratio * heads + 1e-9)), heads - 1)
    if n_prune < 1:
        return f"ratio {ratio:g} of {heads} head(s) rounds to no head to prune (one head is always kept)"
    norms = [sum(float(np.sum(_cols(m.index.constant(p.node.inputs[p.weight]), p, h, d) ** 2))
                 for p in projections.values()) for h in range(heads)]
    return projections, sorted(np.argsort(norms, kind="stable")[:n_prune].tolist()), heads


def _cols(w: np.ndarray, p: Projection, head: int, d: int) -> np.ndarray:
    cols = p.columns(head, d)
    return w[cols, :] if p.trans_b else w[:, cols]


def _zero(edits: dict, index: GraphIndex, node: Node, slot: int, cols: slice, rows: bool) -> None:
    """Record: zero ``cols`` (rows when ``rows``) of constant input ``slot`` of ``node``."""
    data = edits.setdefault((id(node), slot), (node, np.array(index.constant(node.inputs[slot]), copy=True)))[1]
    if data.ndim == 1:
        data[cols] = 0
    elif rows:
        data[cols, :] = 0
    else:
        data[:, cols] = 0


@patch("prune_attention_heads", kind="idea", needs_constants=True, params=[
    Param("ratio", float, 0.25, "fraction of each attention's heads to zero (rounded down; one head is always kept)",
          check=Predicate(lambda r: 0 < r < 1, "0 < ratio < 1")),
])
def prune_attention_heads(graph, *, ratio):
    """Zero the weakest attention heads (smallest Q/K/V weight norm) so they contribute nothing."""
    outcome = PatchOutcome(graph)
    index = GraphIndex(graph)
    edits: dict[tuple[int, int], tuple[Node, np.ndarray]] = {}
    for node in graph.nodes:
        if node.op != "MatMul":
            continue
        m = match_value(ATTENTION, index, node.outputs[0])
        plan = _plan_site(graph, m, ratio) if isinstance(m, Match) else str(m)
        if isinstance(plan, str):
            outcome.refuse("prune-heads", node.label, plan, m.depth if isinstance(m, MatchFailure) else 99)
            continue
        projections, pruned, heads = plan
        d = projections["q"].width // heads
        for p in projections.values():
            for h in pruned:
                _zero(edits, index, p.node, p.weight, p.columns(h, d), rows=p.trans_b)
                if p.bias_node is not None:
                    _zero(edits, index, p.bias_node, p.bias, p.columns(h, d), rows=False)
        outcome.applied("prune-heads", node.label, dict.fromkeys(p.node.label for p in projections.values()))
        outcome.notes.append(f"'{node.label}': zeroed head(s) {pruned} of {heads} (head size {d})")
    _apply_edits(graph, edits)
    return outcome


def _apply_edits(graph: Graph, edits: dict[tuple[int, int], tuple[Node, np.ndarray]]) -> None:
    """Give each edited node its new constants (new parameters; shared originals untouched)."""
    by_node: dict[int, list[tuple[int, np.ndarray]]] = {}
    for (node_id, slot), (_, data) in edits.items():
        by_node.setdefault(node_id, []).append((slot, data))
    new_nodes, replaced = [], []
    for node in graph.nodes:
        if id(node) in by_node:
            inputs = list(node.inputs)
            for slot, data in by_node[id(node)]:
                replaced.append(inputs[slot])
                inputs[slot] = new_param(graph, data, f"{inputs[slot]}.pruned")
            node = node.replace(inputs=tuple(inputs))
        new_nodes.append(node)
    graph.nodes = new_nodes
    drop_unread(graph, replaced)
