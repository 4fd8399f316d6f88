"""The generated source of each kernel of a build directory: what ``dcopt builds diff --source``
compares and what the viewer's build panel shows. The files are cut into kernels the way the
compiler cuts them into kernel-store entries (:func:`dcopt.backends.cpu.renderer.split_module`,
:func:`dcopt.backends.cpu.conv_ir.kernel_functions_ir`), so a kernel shown is a kernel stored."""

from __future__ import annotations

from pathlib import Path


def kernel_sources(directory: Path) -> dict[str, str]:
    """Kernel name -> source: each numba kernel of ``kernels.py`` with its decorators (its
    ``NAME_task`` pool wrapper joined to it) and each LLVM kernel of ``kernels.ll`` (its internal
    helpers, ``@"NAME.full"``, which hold its loops, joined to it)."""
    from dcopt.backends.cpu.conv_ir import kernel_functions_ir
    from dcopt.backends.cpu.renderer import split_module

    sources: dict[str, str] = {}
    try:
        _, kernels = split_module((directory / "kernels.py").read_text())
        sources.update({name: "\n".join(fns[f] for f in sorted(fns)) for name, fns in kernels.items()})
    except OSError:
        pass
    try:
        sources.update(kernel_functions_ir((directory / "kernels.ll").read_text()))
    except OSError:
        pass
    return sources
