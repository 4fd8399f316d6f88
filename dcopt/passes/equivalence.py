"""Numerical equivalence of two graphs on the reference executor.

The check behind ``PassContext.check_equivalence`` and a helper for tests: draw inputs from
the graph's input types, run both graphs, and report each output that differs with its max
absolute and relative error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from dcopt.ir.feeds import random_inputs
from dcopt.ir.executor import run_graph
from dcopt.ir.graph import Graph


def random_feeds(graph: Graph, *, dim_size: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs for equivalence checks: symbolic and unknown dims become ``dim_size``."""
    return random_inputs(graph, seed=seed, dim_size=dim_size)


@dataclass
class Mismatch:
    """One output that differs; ``describe()`` is the sentence put in errors."""

    output: str
    reason: str
    max_abs: float = float("nan")
    max_rel: float = float("nan")

    def describe(self) -> str:
        if self.max_abs == self.max_abs:
            return (f"output '{self.output}' differs: max abs error {self.max_abs:.3g}, "
                    f"max rel error {self.max_rel:.3g} ({self.reason})")
        return f"output '{self.output}' differs: {self.reason}"


def compare_outputs(expected: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray], *,
                    rtol: float = 1e-4, atol: float = 1e-5) -> list[Mismatch]:
    """Every output of ``expected`` checked against ``actual`` (names, dtype, shape, values)."""
    problems = []
    for name, want in expected.items():
        if name not in actual:
            problems.append(Mismatch(name, "missing after the pass"))
            continue
        want, got = np.asarray(want), np.asarray(actual[name])
        if want.dtype != got.dtype:
            problems.append(Mismatch(name, f"dtype {want.dtype} became {got.dtype}"))
        elif want.shape != got.shape:
            problems.append(Mismatch(name, f"shape {want.shape} became {got.shape}"))
        elif want.dtype.kind in "fc":
            wide = np.float64 if want.dtype.kind == "f" else np.complex128
            w, g = want.astype(wide), got.astype(wide)
            ok = np.isclose(g, w, rtol=rtol, atol=atol, equal_nan=True)
            if not ok.all():
                finite = np.isfinite(w) & np.isfinite(g)
                diff = np.abs(g - w)[finite]
                rel = diff / np.maximum(np.abs(w[finite]), np.finfo(np.float64).tiny)
                bad = int((~ok).sum())
                problems.append(Mismatch(
                    name, f"{bad} of {ok.size} elements outside rtol={rtol}, atol={atol}"
                    + ("" if finite.all() else f"; non-finite values differ at {int((~ok & ~finite).sum())}"),
                    float(diff.max()) if diff.size else float("inf"), float(rel.max()) if rel.size else float("inf")))
        elif not np.array_equal(want, got):
            bad = int((want != got).sum())
            problems.append(Mismatch(name, f"{bad} of {want.size} elements differ (exact comparison)"))
    return problems


def assert_equivalent(before: Graph, after: Graph, feeds: Mapping[str, np.ndarray] | None = None, *,
                      rtol: float = 1e-4, atol: float = 1e-5, seed: int = 0) -> None:
    """Raise AssertionError listing every differing output (a test helper)."""
    feeds = dict(feeds) if feeds is not None else random_feeds(before, seed=seed)
    expected = run_graph(before, feeds)
    actual = run_graph(after, {k: v for k, v in feeds.items() if k in after.inputs})
    problems = compare_outputs(expected, actual, rtol=rtol, atol=atol)
    if problems:
        raise AssertionError("; ".join(p.describe() for p in problems))
