"""Recurrent ops (RNN, GRU, LSTM) -> GEMM library calls and cell maps, unrolled over time.

The sequence length is static, so the recurrence unrolls (``dcopt.ops.recurrent`` is the
reference, step for step)::

    xw_d    = X @ W[d]^T                      one GEMM per direction, every time step at once
    per step k and direction d (time t = k, or seq-1-k for the reverse direction):
      hr    = h_{k-1} @ R[d]^T                one GEMM per gate block (GRU without
                                              linear_before_reset: z|r first, then (r*h) @ R_h^T)
      h_k   = cell(xw_d[t], hr, biases, ...)  one map over (batch, hidden): gates, activations
                                              (with clip, alpha/beta), LSTM's peepholes and
                                              input_forget; a batch entry past its
                                              sequence_lens keeps its state
    Y       = the step states, concatenated along time by a tree of two-way concat maps
    Y_h/Y_c = the last step's states

Every step writes its own state containers (one writer per container), so Y is assembled at the
end: pairwise concats copy each element log2(seq) times. The first step of a zero initial
state skips its GEMM. Weights are transposed to row-major ``[in, gates]`` operands once: as
new parameters when constant, else by a copy map.

Limits: ``sequence_lens`` may be a run-time input for the forward direction; a reverse
direction reverses each entry's valid prefix, which with ragged lengths makes the step that
produces a time index depend on the entry, so it is expanded only without ``sequence_lens``,
with one equal to the sequence length (constant) or for one time step. Sequences longer than
:data:`MAX_STEPS` stay op nodes (every step is its own kernel code).

The stateful sequence ops of the newer opsets (LinearAttention, CausalConvWithState) are in
:mod:`dcopt.passes.expansions.state_ops`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dcopt.passes.expand import LoopBuilder, Refused, expansion, fmt, index, params_of
from dcopt.passes.expansions.linalg import HALF, matmul

FLOATS = ("float16", "float32", "float64")
#: Longest sequence unrolled (each step is a GEMM and a map of its own).
MAX_STEPS = 256

#: activation -> (tasklet template over {x} with {a}/{b}, default alpha, default beta), as
#: dcopt.ops.recurrent._ACTIVATIONS (alpha/beta are consumed only by the ones that take them).
#: ``R(...)`` marks where numpy rounds to the input dtype.
ACTIVATIONS = {
    "tanh": ("R(tanh({x}))", None, None),
    "sigmoid": ("R(1.0 / R(1.0 + R(exp(-{x}))))", None, None),
    "relu": ("max({x}, 0.0)", None, None),
    "affine": ("R(R({a} * {x}) + {b})", 1.0, 0.0),
    "leakyrelu": ("({x} if {x} >= 0.0 else R({a} * {x}))", 0.01, None),
    "thresholdedrelu": ("({x} if {x} > {a} else 0.0)", 1.0, None),
    "scaledtanh": ("R({a} * R(tanh(R({b} * {x}))))", 1.0, 1.0),
    "hardsigmoid": ("min(max(R(R({a} * {x}) + {b}), 0.0), 1.0)", 0.2, 0.5),
    "elu": ("({x} if {x} >= 0.0 else R({a} * R(R(exp({x})) - 1.0)))", 1.0, None),
    "softsign": ("R({x} / R(1.0 + abs({x})))", None, None),
    "softplus": ("R(log1p(R(exp({x}))))", None, None),
}


def _rounder(dtype: str):
    """Replace ``R(...)`` markers by the rounding to ``dtype`` (nothing for float32/float64)."""
    def apply(code: str) -> str:
        if dtype not in HALF:
            return code.replace("R(", "(")
        return code.replace("R(", f"as_{dtype}(")
    return apply


@dataclass
class Activation:
    """One activation function of a cell, with its alpha/beta and clip."""

    template: str
    alpha: float | None
    beta: float | None
    clip: float | None

    def code(self, x: str) -> str:
        if self.clip is not None:
            x = f"min(max({x}, {fmt(-self.clip)}), {fmt(self.clip)})"
        return self.template.format(x=x, a=fmt(self.alpha or 0.0), b=fmt(self.beta or 0.0))


def _activations(b: LoopBuilder, defaults: list[str], dirs: int) -> list[list[Activation]]:
    """Per direction the cell's f, g[, h], as the reference consumes the attributes."""
    names = b.attr("activations")
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in (names or defaults * dirs)]
    if len(names) == len(defaults):
        names = names * dirs
    if len(names) < len(defaults) * dirs:  # (RNN's schema default lists two: the extra is unused)
        raise Refused(f"{len(names)} activations for {dirs} direction(s) of {len(defaults)}")
    alphas, betas = list(b.attr("activation_alpha") or []), list(b.attr("activation_beta") or [])
    clip = b.attr("clip")
    acts = []
    for k, name in enumerate(names):
        if name.lower() not in ACTIVATIONS:
            raise Refused(f"activation {name!r}")
        template, a, bb = ACTIVATIONS[name.lower()]
        a = float(alphas.pop(0)) if a is not None and alphas else a
        bb = float(betas.pop(0)) if bb is not None and betas else bb
        lim = float(clip) if clip is not None and k % len(defaults) < 2 else None
        acts.append(Activation(template, a, bb, lim))
    n = len(defaults)
    return [acts[d * n:(d + 1) * n] for d in range(dirs)]


@dataclass(frozen=True)
class Shape:
    seq: int
    batch: int
    inputs: int
    hidden: int
    dirs: int
    gates: int  # gate blocks: 1 (RNN), 3 (GRU), 4 (LSTM)
    layout: int

    def time_major(self, t, bi, rest):
        """Index of (time, batch, rest...) in an X/Y-like container of this layout."""
        return [t, bi, *rest] if self.layout == 0 else [bi, t, *rest]


def row_major_weights(b: LoopBuilder, w: str, d: int, lo: int, hi: int, hint: str) -> str:
    """``w[d, lo:hi, :]^T`` as a ``[in, hi - lo]`` container: a new parameter when ``w`` is
    constant, else a copy map."""
    data = b.constant(w)
    if data is not None:
        name = b.graph.fresh_name(f"{b.node.outputs[0] or b.node.op}_{hint}")
        b.graph.add_parameter(name, np.ascontiguousarray(data[d, lo:hi, :].T))
        return name
    cols = b.shape(w)[2]
    out = b.transient((cols, hi - lo), b.dtype(w), hint)
    b.map(hint, (cols, hi - lo), "out = a", [("a", w, f"{d}, i1 + {lo}, i0")], [("out", out, "i0, i1")])
    return out


def _product(b: LoopBuilder, what: str, a: str, bm: str, shape, dtype: str) -> str:
    """``a @ bm`` into a transient (float32 for half types, read back rounded)."""
    out = b.transient(shape, "float32" if dtype in HALF else dtype, what)
    matmul(b, what, a, bm, out)
    return out


class Recurrence:
    """The unrolled loop of one RNN/GRU/LSTM node; ``cell`` adds one step's nodes."""

    def __init__(self, b: LoopBuilder, gates: int, defaults: list[str], n_states: int):
        self.b = b
        x, w, r = b.input(0), b.input(1), b.input(2)
        self.x, self.w, self.r = x, w, r
        self.bias = b.input(3, optional=True)
        self.lens = b.input(4, optional=True)
        self.initial = [b.input(5 + i, optional=True) for i in range(n_states)]
        self.dtype = b.dtype(x)
        b.require_dtype(x, w, r, self.bias, *self.initial, allowed=(self.dtype,) if self.dtype in FLOATS else FLOATS)
        layout = int(b.attr("layout", 0) or 0)
        seq, batch, inputs = b.static_dims(x, range(3))
        if layout:
            seq, batch = batch, seq
        dirs = b.static_dims(w, [0])[0]
        hidden = b.static_dims(r, [2])[0]
        if b.attr("hidden_size") is not None and int(b.attr("hidden_size")) != hidden:
            raise Refused(f"hidden_size {b.attr('hidden_size')} differs from R's {hidden}")
        self.n = Shape(seq, batch, inputs, hidden, dirs, gates, layout)
        if seq > MAX_STEPS:
            raise Refused(f"{seq} time steps (unrolled up to {MAX_STEPS})")
        if min(seq, batch, hidden) == 0:
            raise Refused("empty sequence, batch or hidden size")
        direction = str(b.attr("direction", "forward"))
        self.direction = "forward" if direction == "foward" else direction
        if (self.direction == "bidirectional") != (dirs == 2):
            raise Refused(f"direction {self.direction!r} with {dirs} weight set(s)")
        self.acts = _activations(b, defaults, dirs)
        self.R = _rounder(self.dtype)
        if self.lens:
            b.require_dtype(self.lens, allowed=("int32", "int64"))
            known = b.constant(self.lens)
            if known is not None and (np.asarray(known) == seq).all():
                self.lens = None  # every entry runs the whole sequence
            elif self.reversed(dirs - 1) and seq > 1:
                raise Refused("a reverse direction with sequence_lens (the reversal depends on each entry's length)")

    def reversed(self, d: int) -> bool:
        return self.direction == "reverse" or d == 1

    def time(self, d: int, k: int) -> int:
        """The time index step ``k`` of direction ``d`` processes."""
        return self.n.seq - 1 - k if self.reversed(d) else k

    # -- pieces ------------------------------------------------------------------------------
    def input_projection(self, d: int) -> str:
        n, b = self.n, self.b
        wt = row_major_weights(b, self.w, d, 0, n.gates * n.hidden, f"wt{d}")
        return _product(b, f"xw{d}", self.x, wt, b.shape(self.x)[:2] + (n.gates * n.hidden,), self.dtype)

    def initial_state(self, i: int, d: int) -> str | None:
        """Direction ``d``'s initial state ``i`` as a ``[batch, hidden]`` container (None: zeros)."""
        name = self.initial[i]
        if not name:
            return None
        n = self.n
        out = self.b.transient((n.batch, n.hidden), self.dtype, f"init{i}_{d}")
        sub = f"{d}, i0, i1" if n.layout == 0 else f"i0, {d}, i1"
        self.b.map(f"init{i}_{d}", (n.batch, n.hidden), "out = a", [("a", name, sub)], [("out", out, "i0, i1")])
        return out

    def xw_read(self, conn: str, xw: str, d: int, k: int, block: int) -> tuple:
        n = self.n
        return (conn, xw, index(n.time_major(str(self.time(d, k)), "i0", [f"{block * n.hidden} + i1"])))

    def bias_read(self, conn: str, d: int, offset: int) -> tuple:
        return (conn, self.bias, f"{d}, {offset} + i1")

    def live(self, k: int) -> tuple[list[tuple], str | None]:
        """(reads, condition) of a batch entry still running at step k (None: always)."""
        if not self.lens:
            return [], None
        return [("n", self.lens, "i0")], f"{k} < n"

    # -- outputs -----------------------------------------------------------------------------
    def outputs(self, states: list[list[list[str]]]) -> None:
        """Y from every step's hidden state, Y_h (and Y_c) from the last ones.
        ``states[d][k]`` are direction d's state containers after step k."""
        b, n = self.b, self.n
        y = b.output(0)
        if y:
            self._sequence(y, [[step[0] for step in states[d]] for d in range(n.dirs)])
        for i in range(len(states[0][0])):
            out = b.output(1 + i)
            if not out:
                continue
            p = params_of(3)
            d, bi = (p[0], p[1]) if n.layout == 0 else (p[1], p[0])
            reads = [(f"h{dd}", states[dd][-1][i], f"{bi}, {p[2]}") for dd in range(n.dirs)]
            code = "out = h0" if n.dirs == 1 else f"out = h0 if {d} == 0 else h1"
            b.map(f"final{i}", b.shape(out), code, reads, [("out", out, index(p))])

    def _sequence(self, y: str, hidden: list[list[str]]) -> None:
        """Y [seq, dirs, batch, hidden] (layout 1: [batch, seq, dirs, hidden]) as leaves per time
        index merged pairwise along time."""
        b, n = self.b, self.n
        axis = 0 if n.layout == 0 else 1
        p = params_of(4)
        d_p, b_p, j_p = (p[1], p[2], p[3]) if n.layout == 0 else (p[2], p[0], p[3])
        leaves = []
        for t in range(n.seq):
            shape = list(b.shape(y))
            shape[axis] = 1
            leaf = y if n.seq == 1 else b.transient(tuple(shape), self.dtype, f"y{t}")
            reads = []
            for d in range(n.dirs):
                k = self.time(d, t)  # the step of direction d that processes time t
                reads.append((f"h{d}", hidden[d][k], f"{b_p}, {j_p}"))
            value = "h0" if n.dirs == 1 else f"(h0 if {d_p} == 0 else h1)"
            if self.lens:  # entries past their length output zeros
                reads.append(("n", self.lens, b_p))
                value = f"{value} if {t} < n else 0.0"
            b.map(f"y{t}", tuple(shape), f"out = {value}", reads, [("out", leaf, index(p))])
            leaves.append(leaf)
        concat_tree(b, leaves, axis, y)


def concat_tree(b: LoopBuilder, leaves: list[str], axis: int, out: str) -> None:
    """``out`` = the leaves concatenated along ``axis``, merged pairwise (each element is copied
    log2(len(leaves)) times; a map per merge, as every container has one writer)."""
    blocks = [(leaf, b.shape(leaf)[axis]) for leaf in leaves]
    rank = len(b.shape(out))
    p = params_of(rank)
    if len(blocks) == 1:
        if blocks[0][0] != out:
            b.map("copy", b.shape(out), "out = a", [("a", blocks[0][0], index(p))], [("out", out, index(p))])
        return
    while len(blocks) > 1:
        merged = []
        for k in range(0, len(blocks) - 1, 2):
            (left, nl), (right, nr) = blocks[k], blocks[k + 1]
            shape = list(b.shape(out))
            shape[axis] = nl + nr
            target = out if len(blocks) == 2 else b.transient(tuple(shape), b.dtype(out), "cat")
            right_sub = list(p)
            right_sub[axis] = f"{p[axis]} - {nl}"
            b.map("cat", tuple(shape), f"out = a if {p[axis]} < {nl} else c",
                  [("a", left, index(p), 0.0), ("c", right, index(right_sub), 0.0)], [("out", target, index(p))])
            merged.append((target, nl + nr))
        if len(blocks) % 2:
            merged.append(blocks[-1])
        blocks = merged


# ------------------------------------------------------------------------------------ the cells

class Cell:
    """The reads of one cell map (direction ``d``, step ``k``) and its rounded sub-expressions."""

    def __init__(self, rec: Recurrence, d: int, k: int, xw: str):
        self.rec, self.d, self.k, self.xw = rec, d, k, xw
        self.reads: list[tuple] = []
        self.R = rec.R

    def read(self, conn: str, container: str, subset: str) -> str:
        self.reads.append((conn, container, subset))
        return conn

    def projected(self, name: str, gate: int) -> str:
        """xw + wb of gate block ``gate`` (the input projection with its bias, as the reference)."""
        rec = self.rec
        self.reads.append(rec.xw_read(f"x{name}", self.xw, self.d, self.k, gate))
        value = self.R(f"R(x{name})") if rec.dtype in HALF else f"x{name}"
        if rec.bias:
            self.reads.append(rec.bias_read(f"wb{name}", self.d, gate * rec.n.hidden))
            value = self.R(f"R({value} + wb{name})")
        return value

    def recurrent(self, name: str, hr: str | None, block: int) -> str | None:
        """h @ R^T (block ``block`` of ``hr``) as rounded from its float32 sum for half types."""
        if hr is None:
            return None
        hs = self.rec.n.hidden
        conn = self.read(f"hr{name}", hr, f"i0, {block * hs} + i1")
        return self.R(f"R({conn})") if self.rec.dtype in HALF else conn

    def recurrent_bias(self, name: str, gate: int) -> str | None:
        rec = self.rec
        if not rec.bias:
            return None
        self.reads.append(rec.bias_read(f"rb{name}", self.d, (rec.n.gates + gate) * rec.n.hidden))
        return f"rb{name}"

    def add(self, *terms: str | None) -> str | None:
        """Left-to-right sum of the present terms, rounded after each addition (None: no terms)."""
        present = [t for t in terms if t]
        if not present:
            return None
        total = present[0]
        for t in present[1:]:
            total = self.R(f"R({total} + {t})")
        return total


def _with_live(rec: Recurrence, k: int, cell: Cell, code: list[str], outs: list[tuple[str, str, str | None]]):
    """Finish a cell tasklet: each new state (var, connector, previous-state connector or None)
    is kept only for live entries."""
    live_reads, cond = rec.live(k)
    cell.reads += live_reads
    for var, conn, prev in outs:
        if cond is None:
            code.append(f"{conn} = {var}")
        else:
            code.append(f"{conn} = {var} if {cond} else {prev or '0.0'}")


@expansion("RNN")
def rnn(graph, node):
    b = LoopBuilder(graph, node)
    rec = Recurrence(b, 1, ["Tanh"], 1)
    n, R = rec.n, rec.R
    states = []
    for d in range(n.dirs):
        xw = rec.input_projection(d)
        rt = row_major_weights(b, rec.r, d, 0, n.hidden, f"rt{d}")
        h = rec.initial_state(0, d)
        chain = []
        for k in range(n.seq):
            cell = Cell(rec, d, k, xw)
            hr = _product(b, f"hr{d}_{k}", h, rt, (n.batch, n.hidden), rec.dtype) if h is not None else None
            pre = cell.add(cell.projected("a", 0), cell.recurrent("a", hr, 0), cell.recurrent_bias("a", 0))
            hp = cell.read("hp", h, "i0, i1") if h is not None else None
            code = [f"g = {pre}", f"new = {R(rec.acts[d][0].code('g'))}"]
            nxt = b.transient((n.batch, n.hidden), rec.dtype, f"h{d}_{k}")
            _with_live(rec, k, cell, code, [("new", "out", hp)])
            b.map(f"cell{d}_{k}", (n.batch, n.hidden), "\n".join(code), cell.reads, [("out", nxt, "i0, i1")])
            h = nxt
            chain.append([h])
        states.append(chain)
    rec.outputs(states)
    return b.nodes


@expansion("LSTM")
def lstm(graph, node):
    b = LoopBuilder(graph, node)
    rec = Recurrence(b, 4, ["Sigmoid", "Tanh", "Tanh"], 2)
    n, R = rec.n, rec.R
    peep = b.input(7, optional=True)
    if peep:
        b.require_dtype(peep, allowed=(rec.dtype,))
    forget_tied = bool(b.attr("input_forget", 0))
    hs = n.hidden
    states = []
    for d in range(n.dirs):
        f, g, h_act = rec.acts[d]
        xw = rec.input_projection(d)
        rt = row_major_weights(b, rec.r, d, 0, 4 * hs, f"rt{d}")
        h, c = rec.initial_state(0, d), rec.initial_state(1, d)
        chain = []
        for k in range(n.seq):
            cell = Cell(rec, d, k, xw)
            hr = _product(b, f"hr{d}_{k}", h, rt, (n.batch, 4 * hs), rec.dtype) if h is not None else None
            code = []
            for gate, name in enumerate("iofc"):  # ONNX gate order
                code.append(f"g{name} = " + cell.add(cell.projected(name, gate), cell.recurrent(name, hr, gate),
                                                     cell.recurrent_bias(name, gate)))
            cp = cell.read("cp", c, "i0, i1") if c is not None else None
            hp = cell.read("hp", h, "i0, i1") if h is not None else None

            def peephole(gate_name: str, offset: int, state: str | None, cell: Cell = cell, d: int = d) -> str:
                """gate input + P * c (the connector is not "pi": that is the constant)."""
                if not peep or state is None:  # P * 0 adds nothing
                    return f"g{gate_name}"
                conn = cell.read(f"peep{gate_name}", peep, f"{d}, {offset} + i1")
                return R(f"R(g{gate_name} + R({conn} * {state}))")

            code.append(f"ig = {R(f.code(peephole('i', 0, cp)))}")
            if forget_tied:
                code.append(f"fg = {R('R(1.0 - ig)')}")
            else:
                code.append(f"fg = {R(f.code(peephole('f', 2 * hs, cp)))}")
            kept = f"R(fg * {cp})" if cp else "0.0"
            code.append(f"cn = {R(f'R({kept} + R(ig * ' + R(g.code('gc')) + '))')}")
            code.append(f"og = {R(f.code(peephole('o', hs, 'cn')))}")
            code.append(f"hn = {R('R(og * ' + R(h_act.code('cn')) + ')')}")
            hn = b.transient((n.batch, hs), rec.dtype, f"h{d}_{k}")
            cn = b.transient((n.batch, hs), rec.dtype, f"c{d}_{k}")
            _with_live(rec, k, cell, code, [("hn", "oh", hp), ("cn", "oc", cp)])
            b.map(f"cell{d}_{k}", (n.batch, hs), "\n".join(code), cell.reads,
                  [("oh", hn, "i0, i1"), ("oc", cn, "i0, i1")])
            h, c = hn, cn
            chain.append([h, c])
        states.append(chain)
    rec.outputs(states)
    return b.nodes


@expansion("GRU")
def gru(graph, node):
    """z and r gates from xw + (h @ R_zr^T + Rb); the candidate from h @ R_h^T + Rb_h scaled by r
    (linear_before_reset) or from (r * h) @ R_h^T, which needs r first: a map writing r * h,
    its GEMM, then the cell map (recomputing z and r, cheaper than storing them)."""
    b = LoopBuilder(graph, node)
    rec = Recurrence(b, 3, ["Sigmoid", "Tanh"], 1)
    n, R = rec.n, rec.R
    hs = n.hidden
    before_reset = bool(b.attr("linear_before_reset", 0))
    states = []
    for d in range(n.dirs):
        f, g = rec.acts[d]
        xw = rec.input_projection(d)
        rt_zr = row_major_weights(b, rec.r, d, 0, (3 if before_reset else 2) * hs, f"rt{d}")
        rt_h = None if before_reset else row_major_weights(b, rec.r, d, 2 * hs, 3 * hs, f"rth{d}")
        h = rec.initial_state(0, d)
        chain = []
        for k in range(n.seq):
            hr = None
            if h is not None:
                hr = _product(b, f"hr{d}_{k}", h, rt_zr, (n.batch, (3 if before_reset else 2) * hs), rec.dtype)
            cell = Cell(rec, d, k, xw)
            gates = []
            for gate, name in enumerate("zr"):
                inner = cell.add(cell.recurrent(name, hr, gate), cell.recurrent_bias(name, gate))
                gates.append(f"{name} = {R(f.code(cell.add(cell.projected(name, gate), inner)))}")
            hp = cell.read("hp", h, "i0, i1") if h is not None else None
            code = list(gates)
            xh = cell.projected("h", 2)
            if before_reset:
                lin = cell.add(cell.recurrent("h", hr, 2), cell.recurrent_bias("h", 2)) or "0.0"
                cand_in = cell.add(xh, R(f"R(r * {lin})"))
            elif hp is None:  # (r * 0) @ R_h^T = 0
                cand_in = cell.add(xh, cell.recurrent_bias("h", 2))
            else:
                rh = b.transient((n.batch, hs), rec.dtype, f"rh{d}_{k}")
                gate_reads = [r_ for r_ in cell.reads if r_[0] in ("xr", "wbr", "hrr", "rbr", "hp")]
                b.map(f"reset{d}_{k}", (n.batch, hs), "\n".join([gates[1], f"out = {R('R(r * hp)')}"]), gate_reads,
                      [("out", rh, "i0, i1")])
                hc = _product(b, f"hc{d}_{k}", rh, rt_h, (n.batch, hs), rec.dtype)
                product = cell.read("hc", hc, "i0, i1")
                cand_in = cell.add(xh, R(f"R({product})") if rec.dtype in HALF else product,
                                   cell.recurrent_bias("h", 2))
            code.append(f"cand = {R(g.code(cand_in))}")
            code.append(f"hn = {R(f'R(R(R(1.0 - z) * cand) + R(z * {hp or 0.0}))')}")
            nxt = b.transient((n.batch, hs), rec.dtype, f"h{d}_{k}")
            _with_live(rec, k, cell, code, [("hn", "out", hp)])
            b.map(f"cell{d}_{k}", (n.batch, hs), "\n".join(code), cell.reads, [("out", nxt, "i0, i1")])
            h = nxt
            chain.append([h])
        states.append(chain)
    rec.outputs(states)
    return b.nodes
