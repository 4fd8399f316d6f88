"""Recurrent ops (RNN, GRU, LSTM) -> unrolled GEMM library calls and maps."""

from __future__ import annotations
