"""Library calls -> steps of the CPU backend's library implementations.

A ``LibraryCall`` node (:mod:`dcopt.ir.loops`) says *what* (a GEMM, a convolution), with its
operands as memlets, its options, its absorbed epilogue (``activation``, a bias ``C``/``B``, a
residual ``R``) and, chosen by ``select-impl``, *which implementation* (``impl``). This module
turns it into the step that implementation runs, packing constant weights once:

The choice itself is made before, in the IR (:mod:`choose`, through select-impl); a call
without one (select-impl did not run) gets the always-applicable ``blas`` routine.

* gemm ``generated`` -- the conv kernel's row-major GEMM form (:func:`directconv.gemm_plan`),
  ``matvec`` -- the batch-1 matrix-vector kernel (:mod:`matvec`); both with constant ``B``
  packed here and bias/clamp (ReLU, ReLU6) applied in the kernel;
* gemm ``blas`` -- OpenBLAS sgemm tasks (batched and broadcast like ``np.matmul``), transposed
  operands as views;
* conv ``direct`` / ``pointwise`` -- generated LLVM kernels (:mod:`directconv`) with packed
  weights and the fused bias/residual/clamp; ``depthwise`` -- the per-channel kernel with the
  fused bias/clamp; ``blas`` -- shifted-GEMM or im2col paths of :func:`gemm.bind_conv` (no
  epilogue; a depthwise conv lowered before ``depthwise`` existed also runs there, unfused).

A 1-D convolution runs as the 2-D one over a height-1 image (a free reshape of NCL data).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dcopt.backends.cpu import directconv, matvec
from dcopt.errors import StaticSizesNeeded, UnsupportedError
from dcopt.ir.clamp import from_options as clamp_from_options, to_params as clamp_to_params
from dcopt.ir.graph import Node
from dcopt.ir.loops import loop_spec
from dcopt.ops.shapes.dims import per_sample

F32 = "float32"


def lower_library_call(gen, node: Node) -> None:
    spec = loop_spec(node)
    conn = {m.connector: m.container for m in spec.inputs}
    out = spec.outputs[0].container
    options = dict(spec.options)
    sized_by_run = [n for n in (*conn.values(), out) if not gen.types[n].is_static]
    chunked = spec.kind == "gemm" and options.get("impl") == "generated" and set(sized_by_run) <= {conn["A"], out}
    per_image = spec.kind == "conv" and all(per_sample(gen.shape(n)) is not None for n in sized_by_run)
    if sized_by_run and ((spec.kind == "conv" and not per_image) or options.get("impl") == "matvec" or (
            options.get("impl") == "generated" and not chunked)):
        what = "convolution" if spec.kind == "conv" else f"{options.get('impl')} GEMM"
        raise StaticSizesNeeded(f"the CPU {what} is generated for fixed sizes; '{sized_by_run[0]}' is "
                                f"{gen.types[sized_by_run[0]]}", node=node.label, op=node.op)
    if spec.kind == "gemm":
        _gemm(gen, node, conn, out, options)
    elif spec.kind == "conv":
        _conv(gen, node, conn, out, options)
    else:
        raise UnsupportedError(f"library call kind {spec.kind!r} has no CPU implementation", node=node.label)


# -- GEMM ---------------------------------------------------------------------------------------

def _gemm(gen, node: Node, conn, out, options) -> None:
    a, b = conn["A"], conn["B"]
    c = conn.get("C")
    impl = options.get("impl") or "blas"  # select-impl's choice; "blas" when none was made
    clamp = clamp_from_options(options)
    alpha = float(options.get("alpha", 1.0))
    if impl in ("matvec", "generated"):
        bw = gen.const(b).astype(np.float32, copy=False)  # packing below makes the one copy
        weights = bw.T if options.get("transB") else bw
        if alpha != 1.0:
            weights = weights * np.float32(alpha)
        bias = None
        if c is not None:
            bias = (gen.const(c).astype(np.float32) * np.float32(options.get("beta", 1.0))).reshape(-1)
            bias = np.broadcast_to(bias, (weights.shape[1],)).copy() if bias.size == 1 else bias
        k, n = weights.shape
        chunk = not gen.types[a].is_static  # a build for every size: rows come in fixed chunks
        m = 0 if chunk else int(np.prod(gen.shape(a)[:-1]))
        if impl == "matvec":
            plan = matvec.plan(k, n, bias is not None, clamp)
            packed, packed_bias = matvec.pack_weights(weights, plan), None
            if bias is not None:
                packed_bias = matvec.pack_bias(bias, plan)
            params = plan.params()
        else:
            plans = directconv.gemm_chunk_plans(k, n) if chunk else [directconv.gemm_plan(m, k, n)]
            plans = [p.with_epilogue(bias is not None, clamp) for p in plans]
            plan = plans[0]
            packed = directconv.pack_grouped(np.ascontiguousarray(weights.T).reshape(n, k, 1, 1), plan)
            packed_bias = None if bias is None else directconv.pack_bias(bias, plan)
            params = {**plan.params(), "group": 1, "pads": [0, 0]}
            if chunk:  # every plan's rows and kernel; they share the packed weights
                params["chunks"] = [{"rows": p.shape.ow, **p.params(), "group": 1, "pads": [0, 0]} for p in plans]
                for extra in plans[1:]:
                    gen.native[extra.name] = extra.functions()
        inputs = [a, gen.add_param(packed, f"{impl}_w")]
        if packed_bias is not None:
            inputs.append(gen.add_param(packed_bias, f"{impl}_b"))
        gen.native[plan.name] = plan.functions()
        gen.emit("matvec" if impl == "matvec" else "gemm", node, inputs, [out], **params)
        return
    if c is not None or clamp is not None:
        raise UnsupportedError("an OpenBLAS GEMM takes no epilogue (bias/activation): fuse-epilogues must not "
                               "absorb one into it", node=node.label)
    if gen.dtype(a) != F32 or gen.dtype(b) != F32:
        raise UnsupportedError(f"the BLAS GEMM handles float32, not {gen.dtype(a)}", node=node.label)
    bw = gen.const(b)
    trans_b = bool(options.get("transB"))
    if bw is not None and (trans_b or alpha != 1.0):
        bw = np.swapaxes(bw, -1, -2) if trans_b else bw
        bw = bw * np.float32(alpha) if alpha != 1.0 else bw
        b, trans_b = gen.add_param(np.ascontiguousarray(bw), "gemm_b"), False
        alpha = 1.0
    mode = "2d" if len(gen.shape(b)) == 2 and not options.get("transA") and not trans_b else "batched"
    gen.emit("matmul", node, [a, b], [out], mode=mode, transA=int(bool(options.get("transA"))),
             transB=int(trans_b), alpha=alpha)


# -- convolution --------------------------------------------------------------------------------

def _conv(gen, node: Node, conn, out, options) -> None:
    x, w = conn["X"], conn["W"]
    bias_name, residual = conn.get("B"), conn.get("R")
    wt = gen.const(w)
    if wt is None or gen.dtype(x) != F32:
        raise UnsupportedError("the CPU conv needs constant float32 weights", node=node.label)
    xs, ys = gen.shape(x), gen.shape(out)
    if len(xs) == 3:  # 1-D: the 2-D conv over a height-1 image
        xs, ys, wt = (xs[0], xs[1], 1, xs[2]), (ys[0], ys[1], 1, ys[2]), wt.reshape(*wt.shape[:2], 1, wt.shape[2])
        options = {**options, "strides": (1, *options["strides"]), "dilations": (1, *options["dilations"]),
                   "pads": (0, options["pads"][0], 0, options["pads"][1])}
    if len(xs) != 4:
        raise UnsupportedError(f"the CPU conv handles 1-D and 2-D convolutions, not {len(xs) - 2}-D", node=node.label)
    kh, kw = wt.shape[2:]
    pads = tuple(int(p) for p in options["pads"])
    geometry = dict(kernel=[int(kh), int(kw)], strides=[int(s) for s in options["strides"]],
                    pads=[pads[0], pads[1]], dilations=[int(d) for d in options["dilations"]],
                    group=int(options.get("group", 1)))
    impl = options.get("impl") or "blas"  # select-impl's choice; "blas" when none was made
    clamp = clamp_from_options(options)
    bias = gen.const(bias_name) if bias_name else None
    if bias_name and bias is None:
        raise UnsupportedError("a conv bias must be constant", node=node.label)
    cin, group = xs[1], geometry["group"]
    depthwise = bool(group == cin == wt.shape[0] and group > 1)
    if impl in ("direct", "pointwise"):
        if impl == "pointwise":
            plan = directconv.pointwise_plan(cin // group, wt.shape[0] // group, ys[2] * ys[3])
        else:  # image by image: a symbolic batch (a build for every size) does not enter the plan
            plan = directconv.plan((1, *xs[1:]), wt.shape, (1, *ys[1:]), **geometry)
        plan = plan.with_epilogue(bias=bias is not None, clamp=clamp, residual=residual is not None)
        if plan.shape.w_stride:  # pointwise: weights and bias read as they are, [cout, cin/g] and [cout]
            packed = wt.reshape(wt.shape[0], -1).astype(np.float32)
            packed_bias = None if bias is None else bias.astype(np.float32).reshape(-1)
            plan = dataclasses.replace(plan, group=group)
        else:
            packed = directconv.pack_grouped(wt, plan)
            packed_bias = None if bias is None else directconv.pack_bias(bias, plan)
        inputs = [x, gen.add_param(packed, "conv_w")]
        if packed_bias is not None:
            inputs.append(gen.add_param(packed_bias.reshape(-1), "conv_b"))
        if residual is not None:
            inputs.append(residual)
        gen.native[plan.name] = plan.functions()
        gen.emit("conv", node, inputs, [out], **geometry, **plan.params(), depthwise=False, view4d=list(xs),
                 out4d=list(ys))
        return
    if impl == "depthwise" and depthwise and residual is None:  # bias and clamp applied as it stores
        inputs = [x, gen.add_param(wt.reshape(wt.shape[0], -1).astype(np.float32), "conv_w")]
        if bias is not None:
            inputs.append(gen.add_param(bias.astype(np.float32).reshape(-1), "conv_b"))
        gen.emit("conv", node, inputs, [out], **geometry, depthwise=True, impl="depthwise", bias=bias is not None,
                 clamp=clamp_to_params(clamp), view4d=list(xs), out4d=list(ys))
        return
    if bias is not None or clamp is not None or residual is not None:
        raise UnsupportedError(f"conv implementation {impl!r} takes no epilogue", node=node.label)
    wname = gen.add_param(wt.reshape(wt.shape[0], -1).astype(np.float32), "conv_w")
    gen.emit("conv", node, [x, wname], [out], **geometry, depthwise=depthwise, view4d=list(xs), out4d=list(ys))
