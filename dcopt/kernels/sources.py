"""The generated source of each kernel of a build directory: what ``dcopt builds diff --source``
compares and what the viewer's build panel shows, read one way for both."""

from __future__ import annotations

import ast
import re
from pathlib import Path


def kernel_sources(directory: Path) -> dict[str, str]:
    """Kernel name -> source: each numba function of ``kernels.py`` with its decorators (a
    kernel's ``NAME_task`` wrapper joined to it) and each LLVM function of ``kernels.ll`` (an entry
    point's internal helpers, ``@"NAME.full"``, which hold its loops, joined to it).

    Python is read with :mod:`ast`: a regular expression over decorated functions (the one
    ``builds diff`` had) ran across functions and found only the last numba kernel."""
    sources: dict[str, str] = {}
    try:
        text = (directory / "kernels.py").read_text()
        lines = text.splitlines(keepends=True)
        for node in ast.parse(text).body:
            if isinstance(node, ast.FunctionDef):
                first = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
                code = "".join(lines[first:node.end_lineno])
                owner = node.name[:-len("_task")] if node.name.endswith("_task") else node.name
                sources[owner] = sources.get(owner, "") + ("\n" if owner in sources else "") + code
    except (OSError, SyntaxError):
        pass
    try:
        text = (directory / "kernels.ll").read_text()
    except OSError:
        return sources
    for m in re.finditer(r'^define [^@]*@"?([\w]+)((?:\.[\w.]+)?)"?\(.*?^}\n', text, re.S | re.M):
        sources[m.group(1)] = sources.get(m.group(1), "") + m.group(0)
    return sources
