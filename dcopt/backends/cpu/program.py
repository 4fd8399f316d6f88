"""The generated program: steps over named buffers, the kernels' sources, the weights and the
memory plan -- what the runtime binds and a build stores."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
    memory: dict = field(default_factory=dict)  # the memory plan: {"arena_size": n, "offsets": {name: [offset, bytes]}}
    weights_index: dict | None = None  # params written to a weights file as generated: its index
