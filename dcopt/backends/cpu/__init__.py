"""The cpu backend: lowering to a fixed step schedule, code generation, and a runtime that runs
every step as tasks on one thread pool.

Pipeline of one compile (``dcopt.compile`` -> :func:`session.compile_model`)::

    import (onnx) -> specialize sizes (specialize) -> passes (O3) -> lower (lower, ewops)
      -> generate (renderer: numba source; directconv, matvec: LLVM IR)
      -> compile (compiler, dcopt.kernels store) -> bind buffers and task tables (runtime)

Modules: ``directconv`` register-blocked direct convolutions with fused bias/ReLU (plans; ``conv_ir``
writes their LLVM IR),
``matvec`` batch-1 dense layers (LLVM IR), ``threadpool`` the native work-claiming pool,
``parallel`` how GEMMs and convs are cut into tasks (OpenBLAS single-threaded per task),
``tasks`` numba kernels as pool tasks, ``mathlib`` vectorizable scalar math, ``library`` fixed
numba kernels (row reductions, pooling, im2col, depthwise conv, LRN), ``gemm`` GEMM/conv step
binding, ``build`` build directories and the compile cache, ``session`` the onnxruntime-like API.
"""
