"""The clamp a library call applies to its result: ReLU, ReLU6 and any Clip with constant bounds.

One definition for everything that touches it: ``fuse-epilogues`` recognizes the tasklets it
absorbs (:func:`match_tasklet`), the library call carries it as options
(:func:`to_options` / :func:`from_options`), the reference executor applies it
(:func:`apply`), the CPU conv, GEMM and matvec kernels emit it
(:func:`dcopt.backends.cpu.clamp.ir_lines`) and name it in their content-derived symbols, and a
build stores it in its step parameters (:func:`to_params` / :func:`from_params`).

A clamp is ``(lo, hi)`` with ``None`` for an open side: ReLU is ``(0.0, None)``, ReLU6
``(0.0, 6.0)``. It computes ``min(max(x, lo), hi)`` as ONNX Clip does, NaN included: each side
is a compare and a select (``x < lo ? lo : x``), which keeps a NaN (its compares are false),
where ``maxnum``/``minnum`` would replace it; bounds with ``lo > hi`` give ``hi`` everywhere,
as ``min(max(x, lo), hi)`` does. Why in the kernel: MobileNet-v2's 35 ReLU6 maps re-read and
re-wrote every expanded activation (0.34 ms of its 2.5 ms on this repository's 2-core host)
where onnxruntime clamps inside its conv.
"""

from __future__ import annotations

import re
from typing import Optional, Tuple

import numpy as np

Clamp = Tuple[Optional[float], Optional[float]]

RELU: Clamp = (0.0, None)

#: How ``expand`` writes ReLU and Clip tasklets (:func:`~dcopt.passes.expand.fmt` numbers: ``0``,
#: ``6.0``, ``1e+30``, ``inf``, negatives parenthesized: ``(-1.5)``).
_UNSIGNED = r"(?:\d+\.?\d*(?:[eE][-+]?\d+)?|inf)"
_NUMBER = rf"(\(-{_UNSIGNED}\)|{_UNSIGNED})"
_FORMS = (
    (re.compile(rf"out = min\(max\(a, {_NUMBER}\), {_NUMBER}\)"), lambda m: (m.group(1), m.group(2))),
    (re.compile(rf"out = max\(a, {_NUMBER}\)"), lambda m: (m.group(1), None)),
    (re.compile(rf"out = min\(a, {_NUMBER}\)"), lambda m: (None, m.group(1))),
)


def match_tasklet(code: str) -> Clamp | None:
    """The clamp a map's tasklet computes on its input ``a``, or None when it is something else."""
    code = code.strip()
    for pattern, bounds in _FORMS:
        m = pattern.fullmatch(code)
        if m:
            lo, hi = bounds(m)
            return (None if lo is None else f32(float(lo.strip("()"))),
                    None if hi is None else f32(float(hi.strip("()"))))
    return None


def to_options(clamp: Clamp) -> dict:
    """Library-call options for ``clamp``: ``activation`` names it (``relu`` stays the word the
    IR viewer and reports show), ``clamp`` holds the bounds."""
    return {"activation": "relu" if clamp == RELU else "clip", "clamp": [clamp[0], clamp[1]]}


def from_options(options) -> Clamp | None:
    """The clamp a library call's options ask for (None: no activation)."""
    act = options.get("activation")
    if not act:
        return None
    if act == "relu":
        return RELU
    bounds = options.get("clamp")
    if act != "clip" or bounds is None:
        raise ValueError(f"unknown kernel activation {act!r}")
    return (bounds[0], bounds[1])


def to_params(clamp: Clamp | None):
    """JSON form for a build's step parameters (None, or ``[lo, hi]`` with null sides)."""
    return None if clamp is None else [clamp[0], clamp[1]]


def from_params(p: dict) -> Clamp | None:
    """The clamp of a stored step: ``clamp`` if present, else an older build's ``relu`` flag."""
    if p.get("clamp") is not None:
        lo, hi = p["clamp"]
        return (None if lo is None else float(lo), None if hi is None else float(hi))
    return RELU if p.get("relu") else None


def as_bounds(clamp: Clamp | None) -> tuple[float, float]:
    """``(lo, hi)`` with open sides (and no clamp) as -inf/+inf: for kernels that always compare."""
    lo, hi = clamp or (None, None)
    return (-np.inf if lo is None else lo, np.inf if hi is None else hi)


def apply(y: np.ndarray, clamp: Clamp | None) -> np.ndarray:
    """``min(max(y, lo), hi)`` with numpy's NaN-propagating maximum/minimum (the reference)."""
    if clamp is None:
        return y
    lo, hi = clamp
    if lo is not None:
        y = np.maximum(y, y.dtype.type(lo))
    if hi is not None:
        y = np.minimum(y, y.dtype.type(hi))
    return y


def f32(value: float) -> float:
    """The bound as the float32 the kernel compares with (the tasklet's bound is x's dtype)."""
    return float(np.float32(value))
