"""The cpu backend: code generation from the lowered IR, and a runtime that runs every step as
tasks on one thread pool. It decides nothing the IR holds (fusion, loop structure, routines,
memory plan: :mod:`dcopt.driver` lowers the graph first).

One compile (``dcopt.compile`` -> :func:`session.compile_model` -> :func:`build.build`)::

    driver.lower (specialize, O3, expand, fuse, form-kernels, plan-memory)
      -> codegen: kernels (map_codegen + scalar_code: numba source), library calls
         (library_calls: generated conv/GEMM LLVM IR via directconv/conv_ir/matvec, OpenBLAS)
      -> compile (compiler, dcopt.kernels store) -> bind buffers and task tables (runtime)

Modules: ``choose`` which routine runs a Conv/MatMul/Gemm (asked by select-impl), ``codegen``
graph -> program, ``map_codegen`` maps -> numba loop nests, ``scalar_code`` tasklets -> typed
scalar code, ``library_calls`` library calls -> steps, ``directconv``/``conv_ir`` register-blocked
direct convolutions and GEMMs (LLVM IR), ``matvec`` batch-1 dense layers (LLVM IR), ``gemm`` binds
GEMM/conv steps (OpenBLAS tasks, im2col, shifted GEMMs), ``library`` the numba parts of the blas
conv routine, ``threadpool`` the native work-claiming pool, ``parallel`` how work is cut into
tasks, ``tasks`` numba kernels as pool tasks, ``mathlib`` vectorizable scalar math exact at the
edges, ``renderer`` the kernel module, ``compiler`` numba/LLVM through the kernel store,
``specialize`` sizes, ``program`` the step list, ``runtime`` binding and running, ``build`` build
directories and the compile cache, ``session`` the onnxruntime-like API.
"""
