"""Resampling ops (Resize, Upsample, GridSample, AffineGrid, RoiAlign, ...) -> maps."""

from __future__ import annotations
