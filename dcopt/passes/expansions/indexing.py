"""Indexing ops (Gather*, Scatter*, OneHot, ...) -> maps with indirect memlets."""

from __future__ import annotations
