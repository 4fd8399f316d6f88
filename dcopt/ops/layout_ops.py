"""Channels-last (NHWC) variants of ONNX's image ops, in domain "dcopt".

The layout pass (:mod:`dcopt.passes.layout`) rewrites conv stacks to these for backends whose
kernels prefer channels-last data. Each is defined by one sentence: ``XNHWC`` on a
channels-last input (``[N, spatial..., C]``) equals transposing it to channels-first, running
ONNX's ``X`` (opset-17 semantics, attributes as ONNX's), and transposing the first output back.
Only the data input (input 0) changes layout; weights, biases and normalization statistics keep
ONNX's layout (Conv weights stay ``[M, C/group, k...]``), so a backend may repack them as it likes.
"""

from __future__ import annotations

import numpy as np

from dcopt.ops import registry
from dcopt.ops.registry import reference

#: The ONNX opset whose definitions the NHWC variants follow.
SEMANTICS_OPSET = 17

#: ONNX op -> its channels-last variant's name (the layout pass reads this table).
CHANNELS_LAST = {op: f"{op}NHWC" for op in ("Conv", "MaxPool", "AveragePool", "GlobalAveragePool",
                                            "GlobalMaxPool", "BatchNormalization", "LRN")}


def to_channels_first(rank: int) -> tuple[int, ...]:
    """Permutation taking ``[N, spatial..., C]`` to ``[N, C, spatial...]``."""
    return (0, rank - 1, *range(1, rank - 1))


def to_channels_last(rank: int) -> tuple[int, ...]:
    """Permutation taking ``[N, C, spatial...]`` to ``[N, spatial..., C]``."""
    return (0, *range(2, rank), 1)


def _channels_last(onnx_op: str):
    def impl(x, *rest, n_outputs=1, **attrs):
        opdef = registry.lookup(onnx_op)
        results = registry.call(opdef, [np.transpose(x, to_channels_first(x.ndim)), *rest], attrs,
                                SEMANTICS_OPSET, n_outputs=n_outputs)
        first = np.ascontiguousarray(np.transpose(results[0], to_channels_last(results[0].ndim)))
        return (first, *results[1:])

    impl.__name__ = f"{onnx_op.lower()}_nhwc"
    impl.__doc__ = f"{onnx_op} on channels-last data (see the module doc)."
    return impl


for _op, _variant in CHANNELS_LAST.items():
    reference(_variant, domain="dcopt")(_channels_last(_op))
