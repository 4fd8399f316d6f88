"""``fuse_gelu``: the erf and tanh decompositions of GELU -> one ONNX ``Gelu`` node.

Exporters spell GELU out in primitive ops, in several association orders:

* erf (BERT): ``x * 0.5 * (1 + erf(x / sqrt(2)))``, e.g. ``(x * (erf(x/sqrt2) + 1)) * 0.5``;
* tanh (GPT-2's "gelu_new"): ``0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))``.

The patterns and rewrites are the ``recognize-ops`` pass's rules ``gelu-erf`` and ``gelu-tanh``
(:mod:`dcopt.passes.recognize`). What the patch adds is how it gets to opset 20, where ONNX
``Gelu`` first exists: the pass raises a graph's opset only when its table shows no node changes
meaning; the patch, when the model has something to fuse and ``bump_opset=true`` (the default),
converts the model with onnx's version converter, which rewrites the nodes whose meaning does
change (a Softmax below opset 13, a ReduceMean's axes at 18), and the result is validated
numerically like any exact patch. With ``bump_opset=false`` every site is refused with the
reason. The ``com.microsoft`` contrib Gelu is not used: it runs only in onnxruntime.
"""

from __future__ import annotations

from dcopt.passes.patches.edit import apply_at_opset, recognize_rules
from dcopt.passes.patches.registry import Param, patch

__all__ = ["fuse_gelu"]

GELU_OPSET = 20
_RULES = {"any": ("gelu-erf", "gelu-tanh"), "none": ("gelu-erf",), "tanh": ("gelu-tanh",)}


@patch("fuse_gelu", kind="exact", params=[
    Param("approximate", str, "any", "which decompositions to fuse: erf ('none'), tanh, or both",
          choices=tuple(_RULES)),
    Param("bump_opset", bool, True, "raise the model to opset 20 (where Gelu exists) when it is lower"),
])
def fuse_gelu(graph, *, approximate, bump_opset):
    """Fuse erf- and tanh-decomposed GELU into ONNX Gelu (opset 20; raises the opset if allowed).

    One node instead of five to eight; fewer intermediate tensors for a backend to move.
    """
    return apply_at_opset(graph, recognize_rules(*_RULES[approximate]), min_opset=GELU_OPSET, bump=bump_opset,
                          what="Gelu")
