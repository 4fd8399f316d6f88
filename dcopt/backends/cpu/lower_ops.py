"""Lowering rules for row kernels (softmax, layer norm, reductions), pooling, attention, LRN
and data movement; mixed into :class:`dcopt.backends.cpu.lower.Lowering`. Each ``lower_<Op>``
emits steps for one node or returns False, and the node then runs as a reference fallback."""

from __future__ import annotations

import numpy as np

from dcopt.backends.cpu import ewops
from dcopt.backends.cpu.program import F32, EwBuilder
from dcopt.ir.graph import Node


class OpLowerings:
    def _rows(self, x: str, axis: int) -> list[int]:
        shape = self.shape(x)
        axis %= max(len(shape), 1)
        return [int(np.prod(shape[:axis], dtype=np.int64)), int(np.prod(shape[axis:], dtype=np.int64))]

    def _softmax(self, node: Node, log: bool):
        x = node.inputs[0]
        axis = self.attrs(node).get("axis", -1 if self.graph.opset_of("") >= 13 else 1)
        rank = len(self.shape(x))
        if self.dtype(x) != F32 or (self.graph.opset_of("") >= 13 and axis % rank != rank - 1):
            return False
        self.emit("softmax", node, [x], node.outputs[:1], rows=self._rows(x, axis), log=log)

    def lower_Softmax(self, node: Node):
        return self._softmax(node, False)

    def lower_LogSoftmax(self, node: Node):
        return self._softmax(node, True)

    def lower_LayerNormalization(self, node: Node):
        at = self.attrs(node)
        x, scale = node.inputs[:2]
        bias = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
        if self.dtype(x) != F32 or any(o for o in node.outputs[1:]):
            return False
        rows = self._rows(x, at.get("axis", -1))
        if bias is None:
            bias = self.add_param(np.zeros(self.shape(scale), np.float32), "ln_bias")
        self.emit("layernorm", node, [x, scale, bias], node.outputs[:1], rows=rows, eps=float(at.get("epsilon", 1e-5)))

    def _reduce(self, node: Node, op: int, axes):
        x = node.inputs[0]
        rank = len(self.shape(x))
        axes = sorted(int(a) % rank for a in axes) if axes is not None else list(range(rank))
        if self.dtype(x) != F32 or not axes or axes != list(range(axes[0], rank)):
            return False
        self.emit("reduce", node, [x], node.outputs[:1], rows=self._rows(x, axes[0]), op=op)

    def _reduce_node(self, node: Node, op: int):
        axes = self.attrs(node).get("axes")
        if len(node.inputs) > 1 and node.inputs[1]:
            c = self.const(node.inputs[1])
            if c is None:
                return False
            axes = c.reshape(-1).tolist()
        return self._reduce(node, op, axes)

    def lower_ReduceSum(self, node):
        return self._reduce_node(node, 0)

    def lower_ReduceMean(self, node):
        return self._reduce_node(node, 1)

    def lower_ReduceMax(self, node):
        return self._reduce_node(node, 2)

    def lower_ReduceMin(self, node):
        return self._reduce_node(node, 3)

    def lower_GlobalAveragePool(self, node):
        return self._reduce(node, 1, range(2, len(self.shape(node.inputs[0]))))

    def lower_GlobalMaxPool(self, node):
        return self._reduce(node, 2, range(2, len(self.shape(node.inputs[0]))))

    def _pool(self, node: Node, is_max: bool):
        from dcopt.ops.nn import _geometry

        at = self.attrs(node)
        x = node.inputs[0]
        k = tuple(at["kernel_shape"])
        strides = tuple(at.get("strides") or (1,) * len(k))
        dil = tuple(at.get("dilations") or (1,) * len(k))
        if len(self.shape(x)) != 4 or self.dtype(x) != F32 or dil != (1, 1) or any(node.outputs[1:]):
            return False
        _, begin, end = _geometry(self.shape(x)[2:], k, strides, dil, at.get("auto_pad", "NOTSET"), at.get("pads"),
                                  bool(at.get("ceil_mode", 0)))
        if k == self.shape(x)[2:] and not any(begin) and not any(end) and self.shape(node.outputs[0])[2:] == (1, 1):
            # A window over the whole plane (ResNet's and Inception's 7x7 head pools): a row
            # reduction, ~10x cheaper than the general window kernel at 1024-2048 x 7x7.
            return self._reduce(node, 1 if not is_max else 2, range(2, 4))
        self.emit("pool", node, [x], node.outputs[:1], kernel=list(k), strides=list(strides), pads=list(begin),
                  pads_end=list(end), is_max=is_max, include_pad=bool(at.get("count_include_pad", 0)))

    def lower_MaxPool(self, node):
        return self._pool(node, True)

    def lower_AveragePool(self, node):
        return self._pool(node, False)

    def lower_Attention(self, node: Node):
        """ONNX Attention-23 on 4-D Q/K/V without caches, GQA, softcap or windows."""
        at = self.attrs(node)
        q, k, v = node.inputs[:3]
        mask = node.inputs[3] if len(node.inputs) > 3 and node.inputs[3] else None
        if (any(node.inputs[4:]) or any(node.outputs[1:]) or len(self.shape(q)) != 4
                or self.shape(k)[1] != self.shape(q)[1] or at.get("softcap", 0.0)
                or at.get("qk_matmul_output_mode", 0) or at.get("left_window_size", -1) != -1
                or at.get("right_window_size", -1) != -1):
            return False
        return self._attention(node, q, k, v, mask, at.get("scale") or 1.0 / np.sqrt(self.shape(q)[-1]),
                               bool(at.get("is_causal", 0)))

    def lower_dcopt_Attention(self, node: Node):
        """dcopt's Attention (what O3's recognizer writes): softmax(q k^T * scale + mask) v."""
        q, k, v = node.inputs[:3]
        mask = node.inputs[3] if len(node.inputs) > 3 and node.inputs[3] else None
        return self._attention(node, q, k, v, mask, float(node.attrs.get("scale", 1.0)), False)

    def _attention(self, node: Node, q, k, v, mask, scale: float, causal: bool):
        """A transpose of K, one batched GEMM whose epilogue scales and adds the mask (and causal
        bias), a row softmax, and a second batched GEMM. All-masked rows give zeros."""
        qs, ks, vs = self.shape(q), self.shape(k), self.shape(v)
        if (len(qs) < 3 or not len(qs) == len(ks) == len(vs) or qs[:-2] != ks[:-2] or ks[:-2] != vs[:-2]
                or {self.dtype(q), self.dtype(k), self.dtype(v)} != {F32}
                or (mask is not None and self.dtype(mask) not in ewops.DTYPES)):
            return False
        lead, sq, skv = qs[:-2], qs[-2], ks[-2]
        rows = int(np.prod(lead, dtype=np.int64)) * sq
        kt = self.temp(f"{k}__t", (*lead, ks[-1], skv))
        self.emit("transpose", node, [k], [kt], perm=[*range(len(lead)), len(lead) + 1, len(lead)])
        raw = self.temp(f"{node.outputs[0]}__qk", (*lead, sq, skv))
        self.emit("matmul", node, [q, kt], [raw], mode="batched")
        ew = EwBuilder((*lead, sq, skv), seed=raw)
        expr = f"{ew.values[raw]} * {ewops.lit(scale)}"
        if mask is not None:
            m = ew.operand(mask)
            expr = f"({expr} + " + (f"(f32(0.0) if {m} else f32(-np.inf)))" if self.dtype(mask) == "bool" else f"{m})")
        if causal:
            bias = np.triu(np.full((sq, skv), -np.inf, np.float32), k=1 + skv - sq)
            expr = f"({expr} + {ew.operand(self.add_param(bias, 'causal'))})"
        logits = self.temp(f"{node.outputs[0]}__logits", (*lead, sq, skv))
        ew.define(logits, expr)
        self.readers[logits] = {-1}  # read by the softmax step below, not by a graph node
        self.open = ew
        probs = self.temp(f"{node.outputs[0]}__probs", (*lead, sq, skv))
        self.emit("softmax", node, [logits], [probs], rows=[rows, skv], log=False)
        self.emit("matmul", node, [probs, v], node.outputs[:1], mode="batched")
        self.open = EwBuilder(self.shape(node.outputs[0]), seed=node.outputs[0])

    def lower_LRN(self, node):
        at = self.attrs(node)
        x = node.inputs[0]
        if self.dtype(x) != F32 or len(self.shape(x)) < 3:
            return False
        self.emit("lrn", node, [x], node.outputs[:1], size=int(at["size"]), alpha=float(at.get("alpha", 1e-4)),
                  beta=float(at.get("beta", 0.75)), bias=float(at.get("bias", 1.0)))

    def _view(self, node: Node):
        if any(o for o in node.outputs[1:] if self.readers.get(o) or o in self.live_out):
            return False
        self.emit("view", node, node.inputs[:1], node.outputs[:1])

    lower_Reshape = lower_Flatten = lower_Squeeze = lower_Unsqueeze = lower_Identity = lower_Dropout = _view

    def lower_Cast(self, node):
        return self._view(node) if self.dtype(node.inputs[0]) == self.dtype(node.outputs[0]) else False

    def lower_Transpose(self, node):
        perm = self.attrs(node).get("perm") or tuple(reversed(range(len(self.shape(node.inputs[0])))))
        self.emit("transpose", node, node.inputs[:1], node.outputs, perm=[int(p) for p in perm])

    def lower_Gather(self, node):
        data, indices = node.inputs
        if self.dtype(indices) not in ("int64", "int32"):
            return False
        axis = int(self.attrs(node).get("axis", 0)) % len(self.shape(data))
        self.emit("gather", node, [data, indices], node.outputs, axis=axis)

    def lower_Split(self, node):
        if not all(node.outputs):
            return False
        axis = int(self.attrs(node).get("axis", 0)) % len(self.shape(node.inputs[0]))
        self.emit("split", node, node.inputs[:1], node.outputs, axis=axis)

    def lower_Concat(self, node):
        axis = int(self.attrs(node)["axis"]) % len(self.shape(node.outputs[0]))
        self.emit("concat", node, node.present_inputs, node.outputs, axis=axis)
