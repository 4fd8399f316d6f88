"""Checks that a patched graph is what its patch promised.

A validator is called as ``validator(before, after, args)`` and returns the list of problems
(empty: valid); ``describe(args)`` says what it checked, for the report. Each patch kind has a
default (:func:`default_validator`):

* :class:`NumericallyEquivalent` (``exact`` patches, and ``approximate`` ones with looser,
  documented tolerances): the structural checks below, then both graphs run on the reference
  executor — dcopt's executor of truth — on the same seeded random inputs, every output compared.
* :class:`StructurallySound` (``idea`` patches, which change the function on purpose): the IR
  verifies, the graph outputs keep their names, dtypes and shapes, the model exports and passes
  ``onnx.checker``, and it still runs, producing outputs of the original shapes that are finite
  wherever the original's were.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from dcopt.errors import DcoptError
from dcopt.ir.executor import run_graph
from dcopt.ir.graph import Graph
from dcopt.passes.equivalence import compare_outputs, random_feeds

__all__ = ["NumericallyEquivalent", "StructurallySound", "ValidationSkipped", "Validator", "default_validator"]


class ValidationSkipped(Exception):
    """Raised by a validator that could check the structure but not run the graphs; the step's
    report says so instead of claiming a numerical check."""


class Validator(ABC):
    """Base of validators; subclasses implement :meth:`check` (problems after the shared ones)."""

    seed: int = 0

    @abstractmethod
    def describe(self, args: Mapping[str, Any]) -> str:
        """One phrase saying what was checked, for the patch report."""

    def __call__(self, before: Graph, after: Graph, args: Mapping[str, Any]) -> list[str]:
        problems = structure_problems(before, after)
        if problems:
            return problems
        feeds = random_feeds(before, seed=self.seed)
        try:
            expected = run_graph(before, feeds)
        except DcoptError as exc:  # the original itself does not run here: nothing to compare against
            raise ValidationSkipped(f"the original does not run on the reference executor ({exc})") from None
        try:
            actual = run_graph(after, {k: v for k, v in feeds.items() if k in after.inputs})
        except Exception as exc:
            return [f"the patched graph does not run on the reference executor: {type(exc).__name__}: {exc}"]
        return self.check(expected, actual, args)

    def check(self, expected: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray],
              args: Mapping[str, Any]) -> list[str]:
        """Problems found comparing the outputs (empty when the patch passes)."""


def structure_problems(before: Graph, after: Graph) -> list[str]:
    """The checks every patched graph must pass: it verifies, keeps its interface, exports."""
    from dcopt.frontends.onnx_export import export_model
    from dcopt.ir.verify import find_problems

    problems = [f"IR: {p}" for p in find_problems(after)]
    if list(after.outputs) != list(before.outputs):
        problems.append(f"graph outputs changed from {before.outputs} to {after.outputs}")
    if list(after.inputs) != list(before.inputs):
        problems.append(f"graph inputs changed from {before.inputs} to {after.inputs}")
    for name in before.outputs:
        old, new = before.type_of(name), after.type_of(name)
        if new is not None and old is not None and (old.dtype != new.dtype or _known(old) and _known(new)
                                                    and tuple(old.shape) != tuple(new.shape)):
            problems.append(f"output '{name}' changed type from {old} to {new}")
    if not problems:
        try:
            export_model(after, check=True)
        except Exception as exc:
            problems.append(f"the patched model does not export to valid ONNX: {exc}")
    return problems


def _known(t) -> bool:
    return t.shape is not None and all(d is not None for d in t.shape)


@dataclass(frozen=True)
class NumericallyEquivalent(Validator):
    """Outputs equal the original's within ``rtol``/``atol`` (fp32 defaults of dcopt's passes).
    Patches whose tolerance depends on a parameter subclass it and override :meth:`tolerances`."""

    rtol: float = 1e-4
    atol: float = 1e-5
    seed: int = 0

    def tolerances(self, args: Mapping[str, Any]) -> tuple[float, float]:
        return self.rtol, self.atol

    def describe(self, args: Mapping[str, Any]) -> str:
        rtol, atol = self.tolerances(args)
        return f"numerically equivalent on the reference executor (rtol={rtol:g}, atol={atol:g})"

    def check(self, expected, actual, args) -> list[str]:
        rtol, atol = self.tolerances(args)
        return [m.describe() for m in compare_outputs(expected, actual, rtol=rtol, atol=atol)]


@dataclass(frozen=True)
class StructurallySound(Validator):
    """Same interface, valid ONNX, still runs with outputs of the original shapes; values may differ."""

    seed: int = 0

    def describe(self, args: Mapping[str, Any]) -> str:
        return "structural: same outputs (names, dtypes, shapes), passes onnx.checker, runs on the reference executor"

    def check(self, expected, actual, args) -> list[str]:
        problems = []
        for name, want in expected.items():
            got = actual.get(name)
            if got is None:
                problems.append(f"output '{name}' is missing")
                continue
            want, got = np.asarray(want), np.asarray(got)
            if want.shape != got.shape or want.dtype != got.dtype:
                problems.append(f"output '{name}' is {got.dtype}{list(got.shape)} at run time, "
                                f"was {want.dtype}{list(want.shape)}")
            elif got.dtype.kind == "f" and np.isfinite(want).all() and not np.isfinite(got).all():
                problems.append(f"output '{name}' has non-finite values where the original's were finite")
        return problems


def default_validator(kind: str) -> Validator:
    """Structural for idea patches; numerical for the others: fp32 tolerances for exact patches,
    rtol 1e-2 / atol 1e-3 for approximate ones that declare no tolerance of their own."""
    if kind == "idea":
        return StructurallySound()
    return NumericallyEquivalent(1e-2, 1e-3) if kind == "approximate" else NumericallyEquivalent()
