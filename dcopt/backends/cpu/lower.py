"""Lowering: a specialized graph (op nodes and FusedGroups) -> a :class:`Program`, a flat list
of steps over named buffers.

Why a flat step list: it is the whole run-time schedule. The runtime binds every step to
preallocated buffers once, so running the model is one loop over prebound calls with no
per-op decisions; the list (plain JSON-able dicts) is also what a build directory stores.

Step kinds: ``ew`` (a generated fused elementwise kernel), ``matmul``/``conv`` (BLAS or
library kernel; a following ``ew`` step is its fused epilogue, run right after on the still-cached
output), ``softmax``/``layernorm``/``reduce``/``pool`` (library row kernels), ``view``
(zero-copy alias), ``transpose``/``concat`` (copies), and ``fallback`` (the reference op, for
anything else: correct, not fast). Fusion follows the FusedGroups when the graph has them
(each group -> its kernel(s)); on an ungrouped graph the same greedy rule runs over the whole
node list: an elementwise node joins the kernel right before it when it reads a value that
kernel computes and has the same iteration shape.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dcopt.backends.cpu import directconv, ewops, matvec
from dcopt.backends.cpu.compiler import array_signature
from dcopt.backends.cpu.lower_ops import OpLowerings
from dcopt.backends.cpu.program import F32, Program, Step, EwBuilder, LazyOperands
from dcopt.ir.graph import Graph, Node
from dcopt.ir.groups import is_group
from dcopt.ir.types import TensorType
from dcopt.ops.registry import schema_defaults



# Fused elementwise kernels this big also get a pool-task wrapper (:func:`renderer.render_ew_task`)
# and run split across the threads: not for the arithmetic, but because the GEMM or conv before
# them was split across cores and a serial kernel then read half its operand from the other
# core's cache (GPT-2's 128x768 bias add: 48 us instead of 9 us).
EW_TASK_ELEMENTS = 16384


class Lowering(OpLowerings):
    def __init__(self, graph: Graph):
        self.graph = graph
        self.types: dict[str, TensorType] = {}
        self.params: dict[str, np.ndarray] = {}
        self._collect(graph)
        flat = [n for node in graph.nodes for n in (node.attrs["body"].nodes if is_group(node) else [node])]
        self.readers: dict[str, set[int]] = {}
        self.reader_nodes: dict[str, list[Node]] = {}
        for n in flat:
            for i in n.present_inputs:
                if id(n) not in self.readers.setdefault(i, set()):
                    self.reader_nodes.setdefault(i, []).append(n)
                self.readers[i].add(id(n))
        self.absorbed: set[int] = set()  # nodes a previous step already computed (a fused Relu)
        self.live_out = set(graph.outputs)
        self.steps: list[Step] = []
        self.kernels: dict[str, str] = {}
        self.native: dict[str, str] = {}  # generated LLVM IR kernels (direct convs), by symbol
        self.signatures: dict[str, set[str]] = {}
        self.open: EwBuilder | None = None

    def _collect(self, g: Graph) -> None:
        for name, c in g.containers.items():
            if c.data is not None:
                self.params.setdefault(name, c.data)
            self.types.setdefault(name, c.type)
        for node in g.nodes:
            if is_group(node):
                self._collect(node.attrs["body"])

    # -- helpers -------------------------------------------------------------------------
    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.types[name].shape)

    def dtype(self, name: str) -> str:
        return self.types[name].dtype

    def const(self, name: str) -> np.ndarray | None:
        return self.params.get(name) if name else None

    def add_param(self, array: np.ndarray, base: str) -> str:
        name = self.graph.fresh_name(base)
        self.params[name] = np.ascontiguousarray(array)
        self.types[name] = TensorType.of(array)
        return name

    def internal(self, like: str, suffix: str) -> str:
        name = self.graph.fresh_name(f"{like}__{suffix}")
        self.types[name] = self.types[like]
        return name

    def temp(self, base: str, shape, dtype: str = F32) -> str:
        name = self.graph.fresh_name(base)
        self.types[name] = TensorType(dtype, tuple(int(d) for d in shape))
        return name

    def attrs(self, node: Node) -> dict:
        merged = dict(schema_defaults(node.op, node.domain, self.graph.opset_of(node.domain)))
        merged.update(node.attrs)
        return merged

    # -- driver --------------------------------------------------------------------------
    def run(self) -> Program:
        grouped = any(is_group(n) for n in self.graph.nodes)
        for node in self.graph.nodes:
            if is_group(node):
                self.close()
                for inner in node.attrs["body"].nodes:
                    self.lower(inner)
                self.close()
            else:
                self.lower(node)
                if grouped:
                    self.close()
        self.close()
        types = {n: (self.shape(n), self.dtype(n)) for s in self.steps for n in (*s.inputs, *s.outputs) if n}
        types.update({n: (self.shape(n), self.dtype(n)) for n in (*self.graph.inputs, *self.graph.outputs)})
        used = {n for s in self.steps for n in s.inputs} | set(self.graph.outputs)
        return Program(list(self.graph.inputs), list(self.graph.outputs), types,
                       {k: v for k, v in self.params.items() if k in used}, self.steps, self.kernels,
                       {k: sorted(v) for k, v in self.signatures.items()}, dict(self.graph.opset), self.native)

    def emit(self, kind: str, node: Node | None, inputs, outputs, **params) -> Step:
        self.close()
        step = Step(kind, list(inputs), list(outputs), params, node.label if node is not None else "")
        self.steps.append(step)
        return step

    def lower(self, node: Node) -> None:
        if id(node) in self.absorbed:
            return
        if self.try_elementwise(node):
            return
        domain = {"": "", "ai.onnx": "", "dcopt": "dcopt_"}.get(node.domain)
        handler = getattr(self, f"lower_{domain}{node.op}", None) if domain is not None else None
        if handler is None or handler(node) is False:
            from dcopt.ir.serialize import _encode_attr

            self.emit("fallback", node, node.inputs, node.outputs, op=node.op, domain=node.domain,
                      opset=self.graph.opset_of(node.domain), attrs={k: _encode_attr(v) for k, v in node.attrs.items()})

    # -- fused elementwise ---------------------------------------------------------------
    def try_elementwise(self, node: Node) -> bool:
        template = ewops.TEMPLATES.get(node.op) if node.domain in ("", "ai.onnx") else None
        outs = [o for o in node.outputs if o]
        if template is None or len(outs) != 1 or self.dtype(outs[0]) not in ewops.DTYPES:
            return False
        if any(name and self.dtype(name) not in ewops.DTYPES for name in node.inputs):
            return False
        shape = self.shape(outs[0])
        joins = self.open is not None and self.open.shape == shape and any(
            i in self.open.values for i in node.present_inputs)
        ew = self.open if joins else EwBuilder(shape)
        mark = (len(ew.args), len(ew.stmts))
        exprs = LazyOperands(node.inputs, lambda name: self._operand(ew, name))
        operands = ewops.Operands(node, exprs, [self.const(n) for n in node.inputs],
                                  lambda a, base: ew.operand(self._bcast_param(a, base, len(shape))))
        expr = template(operands)
        if expr is None:
            del ew.args[mark[0]:]
            return False
        if not joins:
            self.close()
            self.open = ew
        ew.define(outs[0], expr)
        ew.nodes.append(node)
        return True

    def _operand(self, ew: EwBuilder, name: str) -> str:
        if name in ew.values:
            return ew.values[name]
        c = self.const(name)
        if c is not None and c.size == 1 and c.dtype == np.float32:
            return ewops.lit(c.reshape(-1)[0])
        return ew.operand(name)

    def _bcast_param(self, per_channel: np.ndarray, base: str, rank: int) -> str:
        """A per-channel vector (axis 1 of an NC... tensor) as a broadcastable parameter."""
        return self.add_param(per_channel.reshape((-1,) + (1,) * (rank - 2)), base)

    def close(self) -> None:
        ew, self.open = self.open, None
        if ew is None or not ew.stmts:
            return
        inside = {id(n) for n in ew.nodes}
        stored = [n for n in ew.values if n not in ew.args
                  and (n in self.live_out or self.readers.get(n, set()) - inside)]
        if not stored:
            return
        from dcopt.backends.cpu.renderer import render_elementwise

        shapes = [self.shape(a) for a in ew.args]
        name, source, collapsed = render_elementwise(ew.shape, shapes, [self.dtype(a) for a in ew.args], ew.stmts,
                                                     [ew.values[s] for s in stored])
        self.kernels[name] = source
        dtypes = [self.dtype(a) for a in ew.args] + [self.dtype(o) for o in stored]
        ranks = [len(s) for s in collapsed[1:]] + [len(collapsed[0])] * len(stored)
        self.signatures.setdefault(name, set()).add(
            f"void({', '.join(array_signature(d, r) for d, r in zip(dtypes, ranks))})")
        label = "+".join(n.op for n in ew.nodes)
        params = {"kernel": name, "shapes": collapsed}
        if int(np.prod(ew.shape)) >= EW_TASK_ELEMENTS and collapsed[0][0] > 1:
            from dcopt.backends.cpu.renderer import render_ew_task

            task, source, signature = render_ew_task(name, collapsed, dtypes, len(stored))
            self.kernels[task] = source
            self.signatures[task] = {signature}
            params["task"] = task
        self.steps.append(Step("ew", list(ew.args), stored, params, label))

    # -- anchors: GEMM / conv ------------------------------------------------------------
    def _with_epilogue(self, node: Node, out: str, bias: str | None = None, bias_param: np.ndarray | None = None):
        """Where the anchor writes: the node's output, or an internal product followed by
        an open elementwise kernel that adds ``bias`` (and whatever fuses after it)."""
        if bias is None and bias_param is None:
            return out, None
        raw = self.internal(out, "acc")
        ew = EwBuilder(self.shape(out), seed=raw)
        b = ew.operand(bias if bias is not None else self.add_param(bias_param, "bias"))
        return raw, (ew, f"({ew.values[raw]} + {b})", out)

    def _open_epilogue(self, pending) -> None:
        if pending is not None:
            ew, expr, out = pending
            ew.define(out, expr)
            self.open = ew
        else:
            self.open = None

    def lower_MatMul(self, node: Node):
        a, b = node.inputs
        out = node.outputs[0]
        if {self.dtype(a), self.dtype(b)} != {F32} or len(self.shape(a)) < 2 or len(self.shape(b)) < 2:
            return False
        bw = self.const(b)
        if bw is not None and bw.ndim == 2 and self._lower_dense(node, a, bw.astype(np.float32), None, out):
            return None
        mode = "2d" if len(self.shape(b)) == 2 else "batched"
        self.emit("matmul", node, [a, b], [out], mode=mode)
        self.open = EwBuilder(self.shape(out), seed=out)

    def lower_Gemm(self, node: Node):
        at = self.attrs(node)
        a, b = node.inputs[:2]
        c = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
        bw = self.const(b)
        if self.dtype(a) != F32 or bw is None or at.get("transA", 0):
            return False
        weights = (bw.T if at.get("transB", 0) else bw) * np.float32(at.get("alpha", 1.0))
        out = node.outputs[0]
        beta = float(at.get("beta", 1.0))
        cw = self.const(c) if c else None
        if c and cw is None and beta != 1.0:
            return False
        if c is None or (cw is not None and cw.size == weights.shape[1]):
            bias = None if cw is None else (cw * np.float32(beta)).astype(np.float32).reshape(-1)
            if self._lower_dense(node, a, weights.astype(np.float32), bias, out):
                return None
        packed = self.add_param(weights, "gemm_b")
        target, pending = self._with_epilogue(
            node, out, bias=c if c and cw is None else None,
            bias_param=None if cw is None else (cw * np.float32(beta)).astype(np.float32))
        self.emit("matmul", node, [a, packed], [target], mode="2d")
        self._open_epilogue(pending)

    def lower_Conv(self, node: Node):
        from dcopt.ops.nn import _geometry

        at = self.attrs(node)
        x, w = node.inputs[:2]
        b = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
        wt = self.const(w)
        if len(self.shape(x)) != 4 or wt is None or self.dtype(x) != F32 or (b and self.const(b) is None):
            return False
        kh, kw = wt.shape[2:]
        strides = tuple(at.get("strides") or (1, 1))
        dil = tuple(at.get("dilations") or (1, 1))
        _, begin, _ = _geometry(self.shape(x)[2:], (kh, kw), strides, dil, at.get("auto_pad", "NOTSET"),
                                at.get("pads"))
        out = node.outputs[0]
        group = int(at.get("group", 1))
        cin = self.shape(x)[1]
        geometry = dict(kernel=[int(kh), int(kw)], strides=[int(s) for s in strides], pads=[int(p) for p in begin],
                        dilations=[int(d) for d in dil], group=group)
        depthwise = bool(group == cin == wt.shape[0] and group > 1)
        n_img, _, oh, ow = self.shape(out)
        if (geometry["kernel"] == [1, 1] and geometry["strides"] == [1, 1] and geometry["pads"] == [0, 0]
                and not depthwise and directconv.pointwise_fits(oh * ow) and self.const(x) is None):
            pointwise = directconv.pointwise_plan(cin // group, wt.shape[0] // group, oh * ow)
            if pointwise is not None:
                self._lower_direct_conv(node, x, wt, b, out, pointwise, geometry)
                return
        direct = directconv.plan(self.shape(x), wt.shape, self.shape(out), **geometry)
        if direct is not None:
            self._lower_direct_conv(node, x, wt, b, out, direct, geometry)
            return
        target, pending = self._with_epilogue(
            node, out, bias_param=None if b is None else self.const(b).reshape(-1, 1, 1).astype(np.float32))
        wname = self.add_param(wt.reshape(wt.shape[0], -1).astype(np.float32), "conv_w")
        self.emit("conv", node, [x, wname], [target], **geometry, depthwise=depthwise)
        self._open_epilogue(pending)

    def _lower_direct_conv(self, node: Node, x: str, wt: np.ndarray, b: str | None, out: str, direct, geometry):
        """A conv as a generated kernel (:mod:`directconv`) with its weights packed once, here.
        The kernel adds the bias itself and, when the conv's only reader is a Relu, applies
        it too and writes the Relu's output: no elementwise pass over the result. A 1x1 conv
        also absorbs a residual Add/Sum of two (ResNet's block ends: conv + shortcut, then Relu)
        when the shortcut is already computed by an earlier step."""
        residual, absorbed = None, []
        if direct.shape.w_stride:
            add = self.sole_reader(out, "Add", any_input=True) or self.sole_reader(out, "Sum", any_input=True)
            other = [i for i in add.inputs if i != out] if add is not None else []
            if (len(other) == 1 and len(add.inputs) == 2 and self.const(other[0]) is None and self.dtype(other[0]) == F32
                    and self.shape(other[0]) == self.shape(out) == self.shape(add.outputs[0])
                    and self._computed(other[0])):
                residual, out = other[0], add.outputs[0]
                absorbed.append(add)
        relu = self.sole_reader(out, "Relu")
        direct = direct.with_epilogue(bias=b is not None, relu=relu is not None, residual=residual is not None)
        if direct.shape.w_stride:  # pointwise: weights and bias read as they are, [cout, cin/g] and [cout]
            packed, bias = wt.reshape(wt.shape[0], -1).astype(np.float32), None if b is None else self.const(b)
            geometry["group"] = int(geometry["group"])
            direct = dataclasses.replace(direct, group=geometry["group"])
        else:
            packed = directconv.pack_grouped(wt, direct)
            bias = None if b is None else directconv.pack_bias(self.const(b), direct)
        inputs = [x, self.add_param(packed, "conv_w")]
        if bias is not None:
            inputs.append(self.add_param(bias.astype(np.float32).reshape(-1), "conv_b"))
        if residual is not None:
            inputs.append(residual)
        self.absorbed.update(id(n) for n in absorbed)
        if relu is not None:
            self.absorbed.add(id(relu))
            out = relu.outputs[0]
        self.native[direct.name] = direct.functions()
        geometry.update(direct.params())
        self.emit("conv", node, inputs, [out], **geometry, depthwise=False)
        self.open = EwBuilder(self.shape(out), seed=out)

    def _computed(self, name: str) -> bool:
        """Whether ``name`` exists before the next step: a graph input or an emitted step's output."""
        return name in self.graph.inputs or any(name in s.outputs for s in self.steps)

    def _dense_epilogue(self, out: str, n: int, bias: np.ndarray | None):
        """What a dense-layer kernel can absorb after its product ``out``: a following Add of a
        constant ``n``-vector (when there is no bias yet) and then a Relu, each only as the sole
        reader. -> (bias, relu?, the name the kernel writes, the absorbed nodes)."""
        absorbed = []
        if bias is None:
            add = self.sole_reader(out, "Add", any_input=True)
            other = None if add is None else [i for i in add.inputs if i != out]
            const = self.const(other[0]) if other and len(other) == 1 else None
            if const is not None and const.size == n and self.shape(add.outputs[0]) == self.shape(out):
                bias, out = const.astype(np.float32).reshape(-1), add.outputs[0]
                absorbed.append(add)
        relu = self.sole_reader(out, "Relu")
        if relu is not None:
            out = relu.outputs[0]
            absorbed.append(relu)
        return bias, relu is not None, out, absorbed

    def _lower_dense(self, node: Node, a: str, weights: np.ndarray, bias: np.ndarray | None, out: str) -> bool:
        """``a @ weights`` (+ bias, ReLU) as a generated kernel: at one row a matrix-vector
        kernel (:mod:`matvec`), else the conv kernel's GEMM form (:func:`directconv.gemm_plan`),
        both with the weights packed here once. False where the host cannot run them."""
        k, n = weights.shape
        m = int(np.prod(self.shape(a)[:-1]))
        bias, relu, final, absorbed = self._dense_epilogue(out, n, bias)
        if m == 1:
            plan = matvec.plan(k, n, bias is not None, relu)
            if plan is None:
                return False
            packed, packed_bias, kind = matvec.pack_weights(weights, plan), None, "matvec"
            if bias is not None:
                packed_bias = matvec.pack_bias(bias, plan)
        else:
            plan = directconv.gemm_plan(m, k, n)
            if plan is None:
                return False
            plan = plan.with_epilogue(bias is not None, relu)
            packed = directconv.pack_grouped(np.ascontiguousarray(weights.T).reshape(n, k, 1, 1), plan)
            packed_bias = None if bias is None else directconv.pack_bias(bias, plan)
            kind = "gemm"
        self.absorbed.update(id(x) for x in absorbed)
        inputs = [a, self.add_param(packed, f"{kind}_w")]
        if packed_bias is not None:
            inputs.append(self.add_param(packed_bias, f"{kind}_b"))
        self.native[plan.name] = plan.functions()
        params = plan.params() if kind == "matvec" else {**plan.params(), "group": 1, "pads": [0, 0]}
        self.emit(kind, node, inputs, [final], **params)
        self.open = EwBuilder(self.shape(final), seed=final)
        return True

    def sole_reader(self, name: str, op: str, any_input: bool = False) -> Node | None:
        """The one node reading ``name`` if it is an ``op`` (default domain) and ``name`` is not a
        graph output; else None."""
        readers = self.reader_nodes.get(name, [])
        if len(readers) != 1 or name in self.live_out:
            return None
        node = readers[0]
        ok = node.op == op and node.domain in ("", "ai.onnx") and (any_input or node.inputs[0] == name)
        return node if ok else None


def lower(graph: Graph) -> Program:
    """Lower a specialized graph (every container has a static type) to a :class:`Program`."""
    return Lowering(graph).run()
