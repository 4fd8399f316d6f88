"""``fold_batchnorm``: the ``fold-batchnorm`` pass's rule, applied by name as a patch.

The rule itself — BatchNormalization folded into the Conv, Gemm or rank-2 MatMul(+Add) before
it, statistics folded in float64, refusals for training mode, ``spatial=0``, computed weights,
rank-3 MatMuls and shared producers — lives in :mod:`dcopt.passes.fold_batchnorm`, so the pass
and the patch can never disagree. The patch adds what patches add: a name in the registry,
numerical validation of the result, the report and the model's patch history.
"""

from __future__ import annotations

from dcopt.passes.fold_batchnorm import FOLD_BATCHNORM
from dcopt.passes.patches.registry import patch
from dcopt.passes.rewrite import RuleSet

__all__ = ["fold_batchnorm"]


@patch("fold_batchnorm", kind="exact", needs_constants=True)
def fold_batchnorm(graph):
    """Fold inference BatchNormalization into the Conv, Gemm or MatMul(+Add) before it.

    Removes one node and one pass over the activations per BatchNorm; the function computed is
    unchanged (validated numerically). Refuses BatchNorms after other ops (Concat, pooling),
    in training mode, after a rank-3 MatMul, or whose producer's output is also read elsewhere.
    """
    return RuleSet([FOLD_BATCHNORM])
