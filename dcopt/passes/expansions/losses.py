"""Loss ops (NegativeLogLikelihoodLoss, SoftmaxCrossEntropyLoss) -> maps whose labels select the
class through an indirect memlet.

Over the label space ``(n, d1, ...)`` (params named after the input's axes: ``i0, i2, ...``) one
map loads the label ``t`` and reads the log-probability at ``[i0, safe(t), i2, ...]`` -- an
indirect subset -- and the class weight at ``[safe(t)]``. ``safe`` is the reference's rule (an
ignored label reads class 0, then counts with weight 0) written as an index expression,
``t * min(1, max(t - ii, ii - t))``: the factor is 0 exactly when ``t == ii``. Each element's
loss is ``-lp * w`` (the reference's arithmetic, so non-finite ignored entries give NaN like
it); ``none`` writes it, ``sum``/``mean`` accumulate it (and the weights) with a wcr into
scalars that one last map divides.

SoftmaxCrossEntropyLoss computes the log-softmax statistics over the classes (max and sum of
exp, reduced axis innermost) and, unless its log_prob output is wired, never materializes the
log-probabilities: the loss map recomputes ``(a - k) - log(s)`` for the one class it picks, which
is the reference's value bit for bit. With reduction ``none`` the statistics maps and the loss map
are one kernel sharing the sample loop (for [N, C] scores the statistics live in registers; for
[N, C, d...] the classes are not the contiguous axis, so the statistics are per-sample vectors
over ``d``, see :attr:`Rows.order`).
"""

from __future__ import annotations

from dcopt.passes.expand import LoopBuilder, Refused, expansion, index
from dcopt.passes.expansions.reduction import (FLOATS, SHIFT, Rows, compute_dtype, ordered_map, rounded,
                                               softmax_maps)


class _Labels:
    """The label space of a loss over ``scores`` shaped (N, C, d1, ...)."""

    def __init__(self, b: LoopBuilder, scores: str, labels: str):
        self.shape = b.shape(scores)
        if len(self.shape) < 2:
            raise Refused("scores of rank < 2")
        if tuple(b.shape(labels)) != (self.shape[0], *self.shape[2:]):
            raise Refused(f"labels of shape {list(b.shape(labels))} do not fit scores {list(self.shape)}")
        self.rows = Rows(self.shape, (1,))  # kept: the label space; reduced: the classes
        self.params = [f"i{a}" for a in self.rows.kept]

    def at(self, cls: str) -> str:
        """Subset of a (N, C, d...) tensor at class ``cls`` of each label position."""
        return index([self.params[0], cls, *self.params[1:]])

    @property
    def label(self) -> str:
        return index(self.params)


def _safe_class(ignore_index) -> str:
    """Index text of the class a label ``t`` reads: ``t``, or 0 where it is the ignored label."""
    if ignore_index is None:
        return "t"
    ii = f"({int(ignore_index)})" if int(ignore_index) < 0 else str(int(ignore_index))
    return f"t * min(1, max(t - {ii}, {ii} - t))"


def nll_maps(b: LoopBuilder, space: _Labels, labels: str, weight: str | None, loss: str, dtype: str,
             picked_reads: list, picked_code: str) -> None:
    """The loss map over the label space (and, for sum/mean, the division): ``picked_code`` sets
    ``lp``, the log-probability of the label's class, from ``picked_reads`` (which may name the
    connector ``t`` in their subsets)."""
    reduction = b.attr("reduction", "mean")
    if reduction not in ("none", "sum", "mean"):
        raise Refused(f"reduction {reduction!r}")
    ignore = b.attr("ignore_index")
    cls = _safe_class(ignore)
    reads = [("t", labels, space.label), *picked_reads]
    weight_value = "1.0"
    if weight:
        reads.append(("w", weight, cls))
        weight_value = f"as_{dtype}(w)" if b.dtype(weight) != dtype else "w"
    if ignore is not None:
        weight_value = f"0.0 if t == {int(ignore)} else {weight_value}"
    code = f"{picked_code}\nwv = {weight_value}\nout = {rounded('-lp * wv', dtype)}"
    space_dims = [(p, space.shape[a]) for p, a in zip(space.params, space.rows.kept)]
    if reduction == "none":
        ordered_map(b, "loss", space_dims, code, reads, [("out", loss, space.label)])
        return
    acc = compute_dtype(dtype)
    total = b.transient((), acc, "sum")
    writes = [("out", total, "", "sum")]
    finish, finish_reads = "out = s", [("s", total, "")]
    if reduction == "mean":
        weights = b.transient((), acc, "weights")
        writes.append(("wsum", weights, "", "sum"))
        code += "\nwsum = wv"
        finish = f"out = {rounded('s', dtype)} / {rounded('q', dtype)}"
        finish_reads.append(("q", weights, ""))
    ordered_map(b, "loss", space_dims, code, reads, writes, [acc] * len(writes))
    ordered_map(b, "mean" if reduction == "mean" else "total", [], finish, finish_reads, [("out", loss, "")])


@expansion("NegativeLogLikelihoodLoss")
def negative_log_likelihood_loss(graph, node):
    b = LoopBuilder(graph, node)
    lp, labels, weight, loss = b.input(0), b.input(1), b.input(2, optional=True), b.output()
    b.require_dtype(lp, allowed=FLOATS)
    b.require_dtype(labels, allowed=("int32", "int64"))
    space = _Labels(b, lp, labels)
    cls = _safe_class(b.attr("ignore_index"))
    nll_maps(b, space, labels, weight, loss, b.dtype(lp), [("p", lp, space.at(cls))], "lp = p")
    return b.nodes


@expansion("SoftmaxCrossEntropyLoss")
def softmax_cross_entropy_loss(graph, node):
    b = LoopBuilder(graph, node)
    scores, labels, weight, loss = b.input(0), b.input(1), b.input(2, optional=True), b.output()
    b.require_dtype(scores, allowed=FLOATS)
    b.require_dtype(labels, allowed=("int32", "int64"))
    space = _Labels(b, scores, labels)
    dtype = b.dtype(scores)
    cls = _safe_class(b.attr("ignore_index"))
    log_prob = b.output(1)
    if log_prob:  # the output is wanted anyway: the loss picks from it
        softmax_maps(b, scores, log_prob, (1,), log=True)
        nll_maps(b, space, labels, weight, loss, dtype, [("p", log_prob, space.at(cls))], "lp = p")
        return b.nodes
    rows = space.rows
    stat = rows.stat()
    m, s = b.transient(rows.stat_shape(), dtype, "max"), b.transient(rows.stat_shape(), dtype, "sum")
    shifted = rounded("a - k", dtype)
    rows.map(b, "max", "out = a", [("a", scores, rows.full)], [("out", m, stat, "max")])
    rows.map(b, "sum", f"{SHIFT}out = {rounded(f'exp({shifted})', dtype)}", [("a", scores, rows.full),
                                                                            ("m", m, stat)], [("out", s, stat, "sum")])
    log_total = rounded(f"log({rounded('s', dtype)})", dtype)
    picked = f"{SHIFT}lp = {rounded(f'{shifted} - {log_total}', dtype)}"
    nll_maps(b, space, labels, weight, loss, dtype, [("a", scores, space.at(cls)), ("m", m, stat), ("s", s, stat)],
             picked)
    return b.nodes
