"""Stateful sequence ops of the newer opsets: **LinearAttention** (a state recurrence over time,
unrolled like the RNNs of :mod:`dcopt.passes.expansions.recurrent`, whose step limit and
concat tree it shares) and **CausalConvWithState** (a depthwise causal convolution over the
concatenation of the carried state and the input)."""

from __future__ import annotations

import math

from dcopt.passes.expand import LoopBuilder, Refused, expansion, fmt, index, params_of
from dcopt.passes.expansions.linalg import HALF, widened
from dcopt.passes.expansions.recurrent import FLOATS, MAX_STEPS, concat_tree


# ------------------------------------------------------------------------------------ LinearAttention

@expansion("LinearAttention")
def linear_attention(graph, node):
    """The state recurrence of the reference, unrolled over time, in float32 like it::

        S' = S * exp(decay_t)                          (gated rules; per head or per key dim)
        u  = beta_t * (v_t - S'^T k_t)  or  v_t        (delta rules: a map summing over d_k)
        S  = S' + k_t u^T                              (one map over [B, kv_heads, d_k, d_v])
        y_t = scale * q_t S                            (a map summing over d_k, per query head)

    The per-step outputs are concatenated along time (:func:`concat_tree`)."""
    b = LoopBuilder(graph, node)
    q, k, v = b.input(0), b.input(1), b.input(2)
    past, decay, beta = (b.input(i, optional=True) for i in (3, 4, 5))
    y, present = b.output(0), b.output(1)
    b.require_dtype(q, k, v, past, decay, beta, allowed=FLOATS)
    rule = str(b.attr("update_rule", "gated_delta"))
    if rule not in ("linear", "gated", "delta", "gated_delta"):
        raise Refused(f"update_rule {rule!r}")
    gating, delta = rule in ("gated", "gated_delta"), rule in ("delta", "gated_delta")
    if (gating and not decay) or (delta and not beta):
        raise Refused(f"update_rule {rule!r} needs {'decay' if gating else 'beta'}")
    hq, hkv = int(b.attr("q_num_heads")), int(b.attr("kv_num_heads"))
    (batch, steps, q_hidden), (_, _, k_hidden), (_, _, v_hidden) = (b.static_dims(x, range(3)) for x in (q, k, v))
    if q_hidden % hq or k_hidden % hkv or v_hidden % hkv or hq % hkv:
        raise Refused("head counts do not divide the hidden sizes")
    dk, dv, g = k_hidden // hkv, v_hidden // hkv, hq // hkv
    if q_hidden // hq != dk:
        raise Refused("query and key head sizes differ")
    if steps == 0 or steps > MAX_STEPS:
        raise Refused(f"{steps} time steps (unrolled from 1 up to {MAX_STEPS})")
    scale = float(b.attr("scale", 0.0) or 0.0) or 1 / math.sqrt(dk)
    f32 = "float32"
    space = (batch, hkv, dk, dv)
    state = None  # None: zeros
    if past:
        state = past
    leaves = []
    decay_per_key = bool(decay) and b.static_dims(decay, [2])[0] == hkv * dk
    beta_heads = b.static_dims(beta, [2])[0] if beta else 0
    for t in range(steps):
        # decay factor of S[b, h, d, m] at this step, and the reads that give it
        reads_e = []
        factor = None
        if gating:
            col = f"i1 * {dk} + i2" if decay_per_key else "i1"
            reads_e = [("gd", decay, f"i0, {t}, {col}")]
            factor = "exp(as_float32(gd))"
        s_read = ("s", state, "i0, i1, i2, i3") if state else None
        decayed = "as_float32(s)" if state else "0.0"
        if factor and state:
            decayed = f"as_float32(s) * {factor}"
        u_reads = [("vv", v, f"i0, {t}, i1 * {dv} + i3")]
        u = "as_float32(vv)"
        if delta:
            ks = None
            if state:  # S'^T k: sum over d_k
                ks = b.transient((batch, hkv, dv), f32, f"ks{t}")
                terms = [("s", state, "i0, i1, i3, i2"), ("kk", k, f"i0, {t}, i1 * {dk} + i3")]
                kfac = []
                if gating:
                    col = f"i1 * {dk} + i3" if decay_per_key else "i1"
                    kfac = [("gd", decay, f"i0, {t}, {col}")]
                code = "out = as_float32(s) * exp(as_float32(gd)) * as_float32(kk)" if gating else \
                    "out = as_float32(s) * as_float32(kk)"
                b.map(f"ks{t}", (batch, hkv, dv, dk), code, terms + kfac, [("out", ks, "i0, i1, i2", "sum")])
                u_reads.append(("ks", ks, "i0, i1, i3"))
                u = "(as_float32(vv) - ks)"
            u_reads.append(("bt", beta, f"i0, {t}, {'i1' if beta_heads > 1 else '0'}"))
            u = f"as_float32(bt) * {u}"
        nxt = b.transient(space, f32, f"state{t}")
        reads = [r for r in (s_read,) if r] + reads_e + u_reads + [("kd", k, f"i0, {t}, i1 * {dk} + i2")]
        b.map(f"state{t}", space, f"out = {decayed} + as_float32(kd) * {u}", reads, [("out", nxt, "i0, i1, i2, i3")])
        state = nxt
        # y_t[b, 0, hq * dv + m] = scale * sum_d q[b, t, hq * dk + d] * S[b, hq // g, d, m]
        leaf = b.transient((batch, 1, hq * dv), f32, f"y{t}")
        hq_e, m_e = f"i2 // {dv}", f"i2 % {dv}"
        h_e = hq_e if g == 1 else f"({hq_e}) // {g}"
        b.map(f"y{t}", (batch, 1, hq * dv, dk), f"out = {fmt(scale)} * (as_float32(qq) * s)",
              [("qq", q, f"i0, {t}, ({hq_e}) * {dk} + i3"), ("s", state, f"i0, {h_e}, i3, {m_e}")],
              [("out", leaf, "i0, i1, i2", "sum")])
        leaves.append(leaf)
    if y:
        concat_tree(b, leaves, 1, y)
    if present:
        p = params_of(4)
        b.map("present", space, "out = a", [("a", state, index(p))], [("out", present, index(p))])
    return b.nodes


# ------------------------------------------------------------------------------------ CausalConvWithState

@expansion("CausalConvWithState")
def causal_conv_with_state(graph, node):
    """A depthwise convolution over ``concat(past_state, x)`` along time (valid, so the output
    keeps x's length): one map summing the K taps, read from the state or the input by
    position, then bias and SiLU in the reference's work dtype (float32 for float16)."""
    b = LoopBuilder(graph, node)
    x, w = b.input(0), b.input(1)
    bias, past = b.input(2, optional=True), b.input(3, optional=True)
    y, present = b.output(0), b.output(1)
    b.require_dtype(x, w, bias, past, allowed=FLOATS)
    n, c, length = b.static_dims(x, range(3))
    kernel = b.static_dims(w, [2])[0]
    if tuple(b.shape(w)[:2]) != (c, 1) or kernel < 1:
        raise Refused(f"weights of shape {list(b.shape(w))} for {c} channels (depthwise [C, 1, K] expected)")
    activation = str(b.attr("activation", "none"))
    if activation not in ("none", "silu", "swish"):
        raise Refused(f"activation {activation!r}")
    dtype = b.dtype(x)
    work = "float32" if dtype in HALF else dtype
    lead = kernel - 1

    def padded(conn: str, pos: str) -> tuple[str, list]:
        """(expression, reads) of padded[n, c, pos] = past (or zeros) before ``lead``, then x."""
        reads = [(f"{conn}x", x, f"i0, i1, {pos} - {lead}", 0.0)] if lead else [(f"{conn}x", x, f"i0, i1, {pos}")]
        if not lead:
            return f"{conn}x", reads
        if past:
            reads.append((f"{conn}p", past, f"i0, i1, {pos}", 0.0))
            return f"({conn}p if {pos} < {lead} else {conn}x)", reads
        return f"(0.0 if {pos} < {lead} else {conn}x)", reads

    finish = bias or activation != "none" or work != dtype
    acc = b.transient((n, c, length), work, "acc") if finish else y
    value, reads = padded("a", "i2 + i3")
    b.map("taps", (n, c, length, kernel), f"out = {widened(value, dtype)} * {widened('w', dtype)}",
          [*reads, ("w", w, "i1, 0, i3")], [("out", acc, "i0, i1, i2", "sum")])
    if finish:
        reads = [("a", acc, "i0, i1, i2")]
        code = ["v = a"]
        if bias:
            reads.append(("c", bias, "i1"))
            code = [f"v = a + {widened('c', dtype)}"]
        if activation != "none":
            code.append("v = v / (1.0 + exp(-v))")
        b.map("finish", (n, c, length), "\n".join([*code, "out = v"]), reads, [("out", y, "i0, i1, i2")])
    if present:
        value, reads = padded("a", f"i2 + {length}")
        b.map("state", (n, c, lead), f"out = {value}", reads, [("out", present, "i0, i1, i2")])
    return b.nodes
