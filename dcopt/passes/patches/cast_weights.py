"""``cast_weights``: store big float32 weights in fp16 or bf16, cast back to fp32 before use.

Halves the bytes of the weights on disk and in memory while every op still computes (and
accumulates) in fp32: parameter ``W`` becomes a low-precision parameter ``W.fp16`` and a node
``Cast(W.fp16 -> float32)`` that writes the value ``W`` its readers already read, so no reader
changes. A runtime may keep the Casts (weights stay small in memory) or fold them at load time.
(dcopt's own ``fold-constants`` pass would fold them back — run this patch after it.)

Only float32 parameters with at least ``min_elements`` elements are cast: biases and
normalization scales are tiny and the most sensitive to rounding. The only change to the model's
function is the rounding of the weights (fp16: 10 mantissa bits, a relative step of 2^-11; bf16:
7 bits, 2^-8, but fp32's range). The validator compares outputs with the original at:

* fp16: rtol 1e-2, atol 5e-3;
* bf16: rtol 5e-2, atol 5e-2

(measured worst cases on the test models, outputs of order 1: fp16 2.5e-3 absolute on BERT and
1.1e-3 on ResNet-50's softmax; bf16 1.7e-2 on GPT-2, 3.8e-3 on ResNet-50). Deep networks with
tiny or ill-conditioned outputs may need ``--no-validate``.

ONNX ``Cast`` accepts bfloat16 only from opset 13: an older model is raised to opset 13 with
onnx's version converter for ``dtype=bf16`` (``bump_opset=false`` refuses instead).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from dcopt.ir import dtypes
from dcopt.ir.graph import Container, Node
from dcopt.ir.types import TensorType
from dcopt.passes.common import subgraph_reads
from dcopt.passes.match import Predicate
from dcopt.errors import DcoptError
from dcopt.passes.patches.edit import bump_opset as bump_opset_to
from dcopt.passes.patches.edit import new_param
from dcopt.passes.patches.registry import Param, PatchOutcome, patch
from dcopt.passes.patches.validate import NumericallyEquivalent

__all__ = ["TOLERANCES", "cast_weights"]

LOW = {"fp16": "float16", "bf16": "bfloat16"}
BF16_CAST_OPSET = 13
TOLERANCES = {"fp16": (1e-2, 5e-3), "bf16": (5e-2, 5e-2)}  # (rtol, atol) of the validator


@dataclass(frozen=True)
class CastTolerance(NumericallyEquivalent):
    """Numerical equivalence within the tolerance documented for the chosen dtype."""

    def tolerances(self, args: Mapping[str, Any]) -> tuple[float, float]:
        return TOLERANCES[args["dtype"]]


@patch("cast_weights", kind="approximate", validator=CastTolerance(), needs_constants=True, params=[
    Param("dtype", str, "fp16", "storage precision of the weights", choices=tuple(LOW)),
    Param("min_elements", int, 1024, "cast only float32 weights with at least this many elements",
          check=Predicate(lambda n: n >= 1, ">= 1")),
    Param("bump_opset", bool, True, "for bf16, raise a model below opset 13 (where Cast takes bfloat16) to 13"),
])
def cast_weights(graph, *, dtype, min_elements, bump_opset):
    """Store float32 weights in fp16/bf16 with a Cast back to fp32 before use (compute stays fp32)."""
    low = LOW[dtype]
    notes, original = [], graph
    have = graph.opset_of("")
    if low == "bfloat16" and have < BF16_CAST_OPSET:
        reason = f"Cast from bfloat16 needs opset {BF16_CAST_OPSET} but the model is opset {have}"
        try:
            if not bump_opset:
                raise DcoptError(reason + " and bump_opset=false")
            graph = bump_opset_to(graph, BF16_CAST_OPSET)
        except DcoptError as exc:
            outcome = PatchOutcome(graph)
            outcome.refuse("cast-weight", graph.name, str(exc), depth=99)
            return outcome
        notes.append(f"raised the opset from {have} to {BF16_CAST_OPSET} (onnx version converter): {reason}")
    outcome = PatchOutcome(graph, notes=notes)
    read = {i for n in graph.nodes for i in n.present_inputs}
    protected = set(graph.outputs) | subgraph_reads(graph)
    casts = []
    for name, c in list(graph.parameters.items()):
        kind = dtypes.from_numpy(c.data.dtype)
        if kind not in ("float32",) or name not in read:
            continue  # integer constants (shapes, indices) are not weights; unread ones are dead
        if c.data.size < min_elements:
            outcome.refuse("cast-weight", name, f"{c.data.size} elements, fewer than min_elements={min_elements}")
            continue
        if name in protected:
            outcome.refuse("cast-weight", name, "it is a graph output (or read inside a subgraph)")
            continue
        stored = new_param(graph, c.data.astype(dtypes.to_numpy(low)), f"{name}.{dtype}")
        graph.containers[name] = Container(name, TensorType("float32", c.data.shape))  # now the Cast's output
        casts.append(Node("Cast", (stored,), (name,), {"to": dtypes.to_onnx("float32")}, f"{name}/to_float32"))
        outcome.applied("cast-weight", name, (casts[-1].name,))
    graph.nodes = casts + graph.nodes  # Casts read only parameters: first is a topological place
    if not casts:
        outcome.notes.clear()  # nothing cast: the opset is left alone too
        outcome.graph = original
    else:
        outcome.notes.append(f"{len(casts)} weight(s) stored as {low}; ops still compute in float32")
    return outcome
