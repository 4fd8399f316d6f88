"""The cpu backend: a renderer (IR -> numba source) plus a compiler (source -> machine code via
the kernel store), driven by a lowering to a fixed step schedule.

Pipeline of one compile (``dcopt.compile`` -> :func:`session.compile_model`)::

    import (onnx) -> specialize sizes (specialize) -> passes (O3) -> lower (lower, ewops)
      -> render (renderer) -> compile (compiler, dcopt.kernels) -> bind buffers (runtime)

Modules: ``mathlib`` vectorizable scalar math, ``library`` fixed numba kernels (row reductions,
pooling, im2col, depthwise conv, LRN), ``gemm`` BLAS-backed GEMM/conv steps, ``build`` build
directories and the compile cache, ``session`` the onnxruntime-like API object.
"""
