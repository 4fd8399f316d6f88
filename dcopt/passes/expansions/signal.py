"""Signal ops (DFT, STFT, window functions, MelWeightMatrix) -> maps."""

from __future__ import annotations
