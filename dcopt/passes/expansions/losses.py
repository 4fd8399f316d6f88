"""Loss ops (SoftmaxCrossEntropyLoss, NegativeLogLikelihoodLoss) -> maps."""

from __future__ import annotations
