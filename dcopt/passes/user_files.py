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
    try:
        if not path.is_file():
            raise error(f"{what} not found", file=str(path))
        resolved = str(path.resolve()).encode()
        digest = hashlib.sha256(resolved if reload else resolved + path.read_bytes()).hexdigest()[:12]
    except (OSError, ValueError) as exc:  # unreadable, a NUL in the name
        raise error(f"cannot read {what}: {getattr(exc, 'strerror', None) or exc}", file=str(path)) from None
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
    except SystemExit as exc:  # sys.exit(0) must not end dcopt "successfully" with nothing written
        del sys.modules[module_name]
        raise error(f"{what}: importing it called sys.exit({exc.code!r}){where_raised(exc, path)}; a {what} must "
                    "not exit", file=str(path)) from None
    except Exception as exc:
        del sys.modules[module_name]
        raise error(f"{what}: importing it failed: {type(exc).__name__}: {exc}{where_raised(exc, path)}",
                    file=str(path)) from exc
    return module


def where_raised(exc: BaseException, path: str | Path | None = None) -> str:
    """' (line N)' of the innermost frame of ``exc`` in ``path`` (any file: ' (file F, line N)');
    '' when the traceback has none."""
    tb, found = exc.__traceback__, None
    target = str(Path(path).resolve()) if path is not None else None
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if target is None or _same_file(filename, target):
            found = (filename, tb.tb_lineno)
        tb = tb.tb_next
    if found is None:
        return ""
    return f" (line {found[1]})" if target is not None else f" (file {found[0]}, line {found[1]})"


def _same_file(filename: str, target: str) -> bool:
    try:
        return str(Path(filename).resolve()) == target
    except (OSError, ValueError):
        return False


def load_pipeline_file(path: str | Path) -> list:
    """The ``PIPELINE`` a user pipeline file defines (after importing it)."""
    from dcopt.passes.base import Pass

    module = load_user_file(path, "pipeline file")
    pipeline = getattr(module, "PIPELINE", None)
    if callable(pipeline):
        try:
            pipeline = pipeline()
        except DcoptError as exc:
            raise exc.at(file=str(path))
        except (Exception, SystemExit) as exc:
            what = f"called sys.exit({exc.code!r})" if isinstance(exc, SystemExit) else f"raised {type(exc).__name__}: {exc}"
            raise DcoptError(f"PIPELINE() {what}{where_raised(exc, path)}", file=str(path)) from None
    if not isinstance(pipeline, (list, tuple)) or not pipeline:
        raise DcoptError("a pipeline file must define PIPELINE = [pass names or Pass objects, ...]", file=str(path))
    bad = [s for s in pipeline if not isinstance(s, (str, Pass))]
    if bad:
        raise DcoptError(f"PIPELINE holds {type(bad[0]).__name__} {bad[0]!r}; its items must be pass names or Pass "
                         "objects", file=str(path))
    from dcopt.passes.pipelines import build_steps

    names = [s for s in pipeline if isinstance(s, str)]
    try:  # names resolve now, so a typo is reported against this file, before any compile
        if names:
            build_steps(names)
    except DcoptError as exc:
        raise exc.at(file=str(path))
    return list(pipeline)
