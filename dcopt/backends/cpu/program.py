"""The lowered program: steps over named buffers (what the runtime binds and a build stores),
and the small builders the lowering uses for fused elementwise kernels."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

F32 = "float32"


@dataclass
class Step:
    kind: str
    inputs: list[str]
    outputs: list[str]
    params: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    def to_dict(self) -> dict:
        return {"kind": self.kind, "inputs": self.inputs, "outputs": self.outputs, "params": self.params,
                "label": self.label}

    @classmethod
    def from_dict(cls, d: dict) -> "Step":
        return cls(d["kind"], list(d["inputs"]), list(d["outputs"]), dict(d["params"]), d.get("label", ""))


@dataclass
class Program:
    """Everything the runtime needs: buffers (name -> (shape, dtype)), weights, steps, kernels."""

    inputs: list[str]
    outputs: list[str]
    types: dict[str, tuple[tuple[int, ...], str]]
    params: dict[str, np.ndarray]
    steps: list[Step]
    kernels: dict[str, str] = field(default_factory=dict)  # generated function name -> source
    signatures: dict[str, list[str]] = field(default_factory=dict)  # name -> numba signatures
    opset: dict[str, int] = field(default_factory=dict)
    native: dict[str, str] = field(default_factory=dict)  # symbol -> LLVM IR functions (directconv)


class EwBuilder:
    """A fused elementwise kernel under construction: operands, SSA statements, values."""

    def __init__(self, shape: tuple[int, ...], seed: str | None = None):
        self.shape, self.args, self.stmts, self.values, self.nodes = shape, [], [], {}, []
        if seed is not None:
            self.values[seed] = self.operand(seed)

    def operand(self, name: str) -> str:
        if name not in self.args:
            self.args.append(name)
        return f"a{self.args.index(name)}"

    def define(self, name: str, expr: str) -> None:
        var = f"v{len(self.stmts)}"
        self.stmts.append((var, expr))
        self.values[name] = var


class LazyOperands(Sequence):
    """Operand expressions resolved on first access, so inputs a template never reads (BN's
    statistics, folded into new parameters) do not become kernel arguments."""

    def __init__(self, names, resolve):
        self.names, self.resolve, self.cache = list(names), resolve, {}

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = range(len(self))[i]
        if i not in self.cache:
            self.cache[i] = self.resolve(self.names[i]) if self.names[i] else None
        return self.cache[i]
