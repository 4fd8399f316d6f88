"""Loading user Python files that extend dcopt (pipelines, passes, patches).

A user file is plain Python: importing it may register passes (``register_pass``), rules and
patches. A pipeline file also defines ``PIPELINE``: a list of pass names, pipeline names or
:class:`~dcopt.passes.base.Pass` objects (or a function returning one). Nothing of dcopt's source
has to change to add a pass.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from dcopt.errors import DcoptError


def load_user_file(path: str | Path, what: str = "user file", *, reload: bool = False,
                   error: type[DcoptError] = DcoptError) -> ModuleType:
    """Import a Python file by path; errors (``error`` class) name the file.

    By default a file is executed once per path and content. ``reload=True`` executes it again on
    every call under a name derived from its path alone, so what it registers replaces what it
    registered before (instead of clashing with it)."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} not found", file=str(path))
    resolved = str(path.resolve()).encode()
    digest = hashlib.sha256(resolved if reload else resolved + path.read_bytes()).hexdigest()[:12]
    module_name = f"dcopt_user_{path.stem}_{digest}"
    if module_name in sys.modules and not reload:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise error(f"cannot import {what} (is it a .py file?)", file=str(path))
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except DcoptError as exc:
        del sys.modules[module_name]
        raise exc.at(file=str(path))
    except Exception as exc:
        del sys.modules[module_name]
        raise error(f"{what}: importing it failed: {type(exc).__name__}: {exc}", file=str(path)) from exc
    return module


def load_pipeline_file(path: str | Path) -> list:
    """The ``PIPELINE`` a user pipeline file defines (after importing it)."""
    module = load_user_file(path, "pipeline file")
    pipeline = getattr(module, "PIPELINE", None)
    if callable(pipeline):
        pipeline = pipeline()
    if not isinstance(pipeline, (list, tuple)) or not pipeline:
        raise DcoptError("a pipeline file must define PIPELINE = [pass names or Pass objects, ...]", file=str(path))
    return list(pipeline)
