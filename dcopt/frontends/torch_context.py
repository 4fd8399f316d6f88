"""The lowering context: what an ATen -> ONNX lowering (:mod:`dcopt.frontends.torch_lowering`) sees.

:class:`LoweringContext` builds one dcopt Graph while :mod:`dcopt.frontends.torch_import` walks an
FX graph: it maps FX nodes to containers, answers trace-time questions (FakeTensor dtypes and
shapes), emits ONNX-style nodes and computes symbolic sizes at run time. Also here: the
torch -> dcopt dtype and dim conversions lowerings share, and :class:`LoweringError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import sympy
import torch
import torch.fx

from dcopt.ir import dtypes
from dcopt.ir.graph import Graph, Node
from dcopt.ir.types import TensorType


class LoweringError(Exception):
    """An op we know, used in a form we cannot lower (training-mode batch norm, bool indexing...)."""


# ---------------------------------------------------------------------------------------------
# dtypes and dims


def concrete_int(value: Any) -> int | None:
    """The int a size has at import time: an int, a SymInt export proved constant; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, torch.SymInt):
        return value.node.maybe_as_int()
    return None


def dtype_name(dtype: torch.dtype) -> str:
    """torch dtype -> dcopt dtype name (``torch.float32`` -> ``"float32"``)."""
    name = str(dtype).removeprefix("torch.")
    if not dtypes.is_dtype_name(name):
        raise LoweringError(f"dtype {dtype} has no dcopt equivalent")
    return name


def to_numpy(tensor: torch.Tensor, *, copy: bool = False) -> np.ndarray:
    """A CPU tensor as a numpy array (a view unless ``copy``); bfloat16 goes through its bits."""
    tensor = tensor.detach()
    if tensor.device.type != "cpu":
        tensor, copy = tensor.cpu(), False
    if tensor.dtype == torch.bfloat16:
        array = tensor.view(torch.int16).numpy().view(dtypes.to_numpy("bfloat16"))
    else:
        array = tensor.numpy()
    return array.copy() if copy else array


# Ops whose output shape is the broadcast of their inputs' (used to type helper values).
_ELEMENTWISE = frozenset({
    "Add", "Sub", "Mul", "Div", "Pow", "Mod", "Max", "Min", "Where", "Equal", "Less", "LessOrEqual", "Greater",
    "GreaterOrEqual", "And", "Or", "Xor", "Not", "Cast", "Neg", "Abs", "Sqrt", "Reciprocal", "Sigmoid", "Erf",
    "Tanh", "Floor", "Sign", "Exp", "Log", "Relu", "Identity", "Softmax", "LogSoftmax",
})


def _broadcast(shapes: list) -> tuple | None:
    """Numpy broadcasting of IR shapes; None when a rank is unknown or two dims cannot be told apart."""
    if any(s is None for s in shapes) or not shapes:
        return None
    rank = max(len(s) for s in shapes)
    out = []
    for axis in range(rank):
        dims = {s[axis - rank + len(s)] for s in shapes if axis - rank + len(s) >= 0} - {1}
        if len(dims) > 1 or None in dims:
            return None
        out.append(dims.pop() if dims else 1)
    return tuple(out)


@dataclass
class SymSource:
    """Where a size symbol's value can be read at run time: dim ``axis`` of container ``name``
    (``axis`` None: the container is itself a ``[1]`` int64 size input)."""

    name: str
    axis: int | None


# ---------------------------------------------------------------------------------------------
# The lowering context: what an op lowering sees


class LoweringContext:
    """Builds one Graph from one FX graph. Lowerings (torch_lowering) call its small helpers:

    * ``ctx.tensor(arg, dtype)``: the container holding an argument (casting or materializing
      Python scalars as constants);
    * ``ctx.emit(op, inputs, **attrs)``: add an ONNX-style node, returning its output name(s);
    * ``ctx.ints(list)``: a 1-D int64 tensor from a list of ints and SymInt nodes (shapes);
    * ``ctx.val(arg)`` / ``ctx.dtype(arg)`` / ``ctx.shape(arg)``: trace-time facts (FakeTensors).
    """

    def __init__(self, name: str, opset: int, symbol_names: Mapping[str, str] | None):
        self.graph = Graph(name, {"": opset})
        self.opset = opset
        self.symbol_names = dict(symbol_names or {})
        self.env: dict[torch.fx.Node, Any] = {}
        self.node: torch.fx.Node | None = None
        self.sym_sources: dict[sympy.Symbol, SymSource] = {}
        self._sym_cache: dict[sympy.Expr, str] = {}
        self._const_cache: dict[tuple, str] = {}
        self._counter = 0

    # -- names -----------------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        """A container name not used yet (O(1): a counter, not a scan of the graph)."""
        while True:
            self._counter += 1
            name = f"{base}__{self._counter}"
            if name not in self.graph.containers:
                return name

    def dim(self, d: Any) -> int | str:
        """A FakeTensor dim -> IR dim: an int, or the symbol's (renamed) name as a str."""
        if concrete_int(d) is not None:
            return concrete_int(d)
        expr = d.node.expr
        renames = {s: sympy.Symbol(self.symbol_names[str(s)]) for s in expr.free_symbols
                   if str(s) in self.symbol_names}
        return str(expr.xreplace(renames) if renames else expr)

    def type_of_val(self, val: Any) -> TensorType:
        if isinstance(val, torch.Tensor):
            return TensorType(dtype_name(val.dtype), tuple(self.dim(d) for d in val.shape))
        if isinstance(val, torch.SymInt):
            return TensorType("int64", (1,))
        raise LoweringError(f"value of type {type(val).__name__} is not a tensor")

    # -- trace-time facts --------------------------------------------------------------------
    def val(self, arg: Any) -> Any:
        """The FakeTensor / SymInt / Python value an argument had at trace time."""
        return arg.meta.get("val") if isinstance(arg, torch.fx.Node) else arg

    def out_val(self) -> Any:
        return self.node.meta.get("val")

    def dtype(self, arg: Any) -> str:
        """dcopt dtype of an argument; Python scalars take torch's defaults."""
        if isinstance(arg, torch.fx.Node):
            name = self.env.get(arg)
            if isinstance(name, str):
                return self.graph.containers[name].type.dtype
            return "int64" if isinstance(self.val(arg), (int, torch.SymInt)) else dtype_name(self.val(arg).dtype)
        if isinstance(arg, bool):
            return "bool"
        if isinstance(arg, int):
            return "int64"
        return "float32"

    def out_dtype(self, index: int | None = None) -> str:
        val = self.out_val() if index is None else self.out_val()[index]
        return dtype_name(val.dtype)

    def shape(self, arg: Any) -> tuple:
        """Trace-time shape: ints, and SymInts for dynamic dims (use :meth:`static_shape` for ints only)."""
        return tuple(self.val(arg).shape)

    def rank(self, arg: Any) -> int:
        return len(self.val(arg).shape) if isinstance(arg, torch.fx.Node) else 0

    def static_int(self, value: Any, what: str = "value") -> int:
        """An int known at import time (SymInts export proved constant count too)."""
        v = concrete_int(self.val(value))
        if v is None:
            raise LoweringError(f"{what} must be static, but it depends on a dynamic dim ({self.val(value)})")
        return v

    def static_shape(self, arg: Any, what: str = "shape") -> tuple[int, ...]:
        return tuple(self.static_int(d, what) for d in self.shape(arg))

    # -- values ------------------------------------------------------------------------------
    def tensor(self, arg: Any, dtype: str | None = None) -> str:
        """The container holding ``arg`` (cast to ``dtype`` when given and different).

        Python scalars become 0-d constants, SymInts ``[1]`` int64 size tensors."""
        if isinstance(arg, torch.fx.Node):
            value = self.env[arg]
            if isinstance(value, (bool, int, float)):  # a size or scalar export proved static
                return self.const(value, dtype or self.dtype(value))
            if not isinstance(value, str):
                raise LoweringError(f"argument '{arg.name}' is not a tensor")
            return self.cast(value, dtype) if dtype else value
        if isinstance(arg, (bool, int, float)):
            return self.const(arg, dtype or self.dtype(arg))
        raise LoweringError(f"cannot use {type(arg).__name__} {arg!r} as a tensor")

    def const(self, value: Any, dtype: str) -> str:
        """A constant as an IR parameter; small constants are shared between nodes."""
        array = np.asarray(value, dtype=dtypes.to_numpy(dtype))
        key = (dtype, array.shape, array.tobytes()) if array.size <= 64 else None
        if key is not None and key in self._const_cache:
            return self._const_cache[key]
        name = self.fresh(f"{self.node.name if self.node is not None else 'const'}_const")
        array.flags.writeable = False
        self.graph.add_parameter(name, array)
        if key is not None:
            self._const_cache[key] = name
        return name

    def cast(self, name: str, dtype: str) -> str:
        if self.graph.containers[name].type.dtype == dtype:
            return name
        return self.emit("Cast", [name], dtype=dtype, to=dtypes.to_onnx(dtype))

    def ints(self, values: Sequence[Any]) -> str:
        """A 1-D int64 tensor from ints and SymInt nodes: shapes, sizes, slice bounds."""
        parts: list[str] = []
        run: list[int] = []
        for v in values:
            resolved = self.env.get(v, v) if isinstance(v, torch.fx.Node) else v
            if isinstance(resolved, (int, np.integer)):
                run.append(int(resolved))
                continue
            if not isinstance(resolved, str):
                raise LoweringError(f"size {v!r} is not an int")
            if run:
                parts.append(self.const(run, "int64"))
                run = []
            parts.append(resolved)
        if run or not parts:
            parts.append(self.const(run, "int64"))
        if len(parts) == 1:
            return parts[0]
        return self.emit("Concat", parts, dtype="int64", shape=(len(values),), axis=0)

    def scalar_int(self, value: Any) -> str:
        """A 0-d int64 tensor (Range bounds, Gather indices)."""
        v = self.env.get(value, value) if isinstance(value, torch.fx.Node) else value
        if isinstance(v, (int, np.integer)):
            return self.const(int(v), "int64")
        return self.emit("Squeeze", [v, self.const([0], "int64")], dtype="int64", shape=())

    def shape_tensor(self, dims: Sequence[Any]) -> str:
        """A 1-D int64 tensor holding a trace-time shape (ints and SymInts) at run time."""
        return self.ints([self.sym(d.node.expr) if concrete_int(d) is None else concrete_int(d) for d in dims])

    def sym(self, expr: sympy.Expr) -> str:
        """The run-time value of a size expression as a ``[1]`` int64 tensor.

        Symbols are read from the input that introduced them (``Shape``); sums, products,
        floor divisions, remainders, min and max of sizes become the matching ONNX ops."""
        expr = sympy.sympify(expr)
        if expr.is_Integer:
            return self.const([int(expr)], "int64")
        if expr in self._sym_cache:
            return self._sym_cache[expr]
        name = self._sym_uncached(expr)
        self._sym_cache[expr] = name
        return name

    def _sym_uncached(self, expr: sympy.Expr) -> str:
        if expr.is_Symbol:
            src = self.sym_sources.get(expr)
            if src is None:
                raise LoweringError(f"size '{expr}' is data-dependent (not a dim of any input)")
            if src.axis is None:
                return src.name
            return self.emit("Shape", [src.name], dtype="int64", shape=(1,), start=src.axis, end=src.axis + 1)
        fname = type(expr).__name__
        binary = {"Add": "Add", "Mul": "Mul", "FloorDiv": "Div", "Mod": "Mod", "PythonMod": "Mod",
                  "Max": "Max", "Min": "Min"}
        if fname == "Pow" and expr.exp.is_Integer and expr.exp > 0:
            return self._fold("Mul", [expr.base] * int(expr.exp))
        if fname in binary:
            return self._fold(binary[fname], list(expr.args))
        raise LoweringError(f"cannot compute size expression '{expr}' ({fname}) at run time")

    def _fold(self, op: str, args: list) -> str:
        acc = self.sym(args[0])
        for arg in args[1:]:
            acc = self.emit(op, [acc, self.sym(arg)], dtype="int64", shape=(1,))
        return acc

    # -- nodes -------------------------------------------------------------------------------
    def emit(self, op: str, inputs: Sequence[str | None], *, outputs: int = 1, dtype: str | None = None,
             shape: tuple | None = None, **attrs) -> Any:
        """Add one node; returns its output name (a tuple of names when ``outputs`` > 1).

        Output types default to the first input's dtype with unknown shape; the importer then
        re-types the value that ends a lowering from the FX node's FakeTensor."""
        ins = list(i or "" for i in inputs)
        while ins and not ins[-1]:
            ins.pop()  # omitted trailing optional inputs are left out, not written as ''
        first = next((i for i in ins if i), None)
        dtype = dtype or (self.graph.containers[first].type.dtype if first else "float32")
        if shape is None and op in _ELEMENTWISE:
            shape = _broadcast([self.graph.containers[i].type.shape for i in ins if i])
        elif shape is None and op == "Transpose" and self.graph.containers[first].type.shape is not None:
            shape = tuple(self.graph.containers[first].type.shape[p] for p in attrs["perm"])
        outs = tuple(self.fresh(self.node.name) for _ in range(outputs))
        for out in outs:
            self.graph.add_container(out, TensorType(dtype, shape))
        self.graph.add_node(Node(op, ins, outs, attrs, name=outs[0]))
        return outs if outputs > 1 else outs[0]
