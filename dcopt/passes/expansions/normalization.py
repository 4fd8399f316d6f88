"""Normalization ops beyond LayerNorm/BatchNorm (GroupNorm, InstanceNorm, RMSNorm, LpNorm, MVN) -> maps."""

from __future__ import annotations
