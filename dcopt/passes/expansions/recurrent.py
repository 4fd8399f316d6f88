"""Recurrent ops (RNN, GRU, LSTM) -> unrolled GEMM library calls and maps."""

from __future__ import annotations

# Registered here until dcopt.passes.expand lists it in RULE_MODULES.
from dcopt.passes.expansions import linalg as _linalg  # noqa: E402,F401
