"""Writing directories a user named: never lose their data.

Every command that writes a directory (``dcopt compile -o``, ``session.save``, build caches)
goes through :func:`staged_directory`. Why one place: the directory a user gives may hold
anything (their documents, the working directory, ``$HOME``), and the only safe way to replace
something is to know exactly what it is. The rules:

* Paths that can never be an output are refused outright: ``""``, ``.``, the working directory
  and every directory above it, ``$HOME`` and every directory above it, ``/``, and anything
  under the kernel's pseudo file systems (``/proc``, ``/sys``, ``/dev``).
* Content is written into a temporary *sibling* (same file system, so the final rename is
  atomic) created with the user's umask, and renamed into place only when complete: an
  interrupted write leaves at most a hidden ``.<name>.tmp-*`` directory nobody trusts.
* An existing path is replaced only when ``replaceable(path)`` says it is ours (a dcopt build
  for builds) *and* the caller allows it (``force``); anything else is an
  :class:`OutputPathError` that names the path and says what to do. The old directory is
  renamed aside before the new one moves in and deleted only after; deletion never follows a
  path we did not verify.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Callable, Iterator

from dcopt.errors import DcoptError

#: Pseudo file systems: writing there is never what a user meant.
PSEUDO_ROOTS = ("/proc", "/sys", "/dev")


class OutputPathError(DcoptError):
    """An output path that dcopt will not write (or replace); the message says why."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _ancestors_and_self(path: Path) -> set[Path]:
    return {path, *path.parents}


def check_output_path(path: str | os.PathLike) -> Path:
    """The absolute path ``path`` names, or :class:`OutputPathError` when it is one that must never
    be written or replaced (see the module docstring)."""
    text = os.fspath(path)
    if not str(text).strip():
        raise OutputPathError("the output path is empty; name a new directory, e.g. -o model.dcopt")
    target = Path(os.path.abspath(text))
    resolved = target.resolve()
    protected = _ancestors_and_self(Path.cwd().resolve()) | {Path("/")}
    home = os.environ.get("HOME")
    if home:
        protected |= _ancestors_and_self(Path(home).resolve())
    if resolved in protected or target in protected:
        raise OutputPathError(f"refusing to write to '{text}': it is the working directory, the home directory, "
                              "/ or a directory above them; name a new directory, e.g. -o model.dcopt")
    for root in PSEUDO_ROOTS:
        if resolved == Path(root) or Path(root) in resolved.parents:
            raise OutputPathError(f"refusing to write to '{text}': {root} is a kernel pseudo file system")
    for parent in resolved.parents:
        if parent.exists() and not parent.is_dir():
            raise OutputPathError(f"cannot write to '{text}': '{parent}' is a file, not a directory")
    return target


@contextlib.contextmanager
def staged_directory(path: str | os.PathLike, *, replaceable: Callable[[Path], bool], force: bool = False,
                     what: str = "output") -> Iterator[Path]:
    """Yield an empty staging directory next to ``path``; on a clean exit it becomes ``path``.

    ``replaceable(existing)`` says whether an existing ``path`` is something of ours that may be
    replaced (``what`` names it in errors); replacing also needs ``force``. The staging directory
    is removed if the body raises (it is ours: we created it)."""
    target = check_target(path, replaceable=replaceable, force=force, what=what)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
        staging.mkdir(mode=0o777 & ~_umask())
    except OSError as exc:
        raise OutputPathError(f"cannot create '{target}': {exc.strerror or exc}") from None
    try:
        yield staging
        _check_replace(target, replaceable, force, what)  # it may have appeared meanwhile
        _swap_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def check_target(path: str | os.PathLike, *, replaceable: Callable[[Path], bool], force: bool = False,
                 what: str = "output") -> Path:
    """:func:`check_output_path`, plus the replacement rule of :func:`staged_directory`: callers
    check before expensive work (a compile) so a refused path costs nothing."""
    target = check_output_path(path)
    _check_replace(target, replaceable, force, what)
    return target


def _check_replace(target: Path, replaceable: Callable[[Path], bool], force: bool, what: str) -> None:
    if not (target.exists() or target.is_symlink()):
        return
    if target.is_symlink() or not target.is_dir() or not replaceable(target):
        raise OutputPathError(f"refusing to replace '{target}': it exists and is not a {what}; "
                              "choose a path that does not exist")
    if not force:
        raise OutputPathError(f"'{target}' already holds a {what}; pass --force (force=True) to replace it")


def _swap_into_place(staging: Path, target: Path) -> None:
    """Rename ``staging`` to ``target``; an existing (verified) target is renamed aside first and
    deleted only once the new one is in place. POSIX cannot swap two non-empty directories
    atomically, so ``target`` is briefly absent -- never half-written."""
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(target, old)
    try:
        os.replace(staging, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def replace_directory(staging: Path, target: Path) -> None:
    """Move a complete ``staging`` directory to ``target`` inside a store dcopt owns (no user path
    checks: the caller created both)."""
    _swap_into_place(staging, target)


@contextlib.contextmanager
def staged_file(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary sibling of file ``path`` to write (by path, for writers such as
    ``onnx.save_model`` that want one), renamed onto ``path`` when the block succeeds and
    removed when it fails: readers see the old file or the whole new one, never half of it. It
    gets the permissions any new file gets under the user's umask (``mkstemp``'s are 0600,
    which would hide an exported model from the user's group). The one atomic file write of
    dcopt: every file a user names and every store object goes through it."""
    import tempfile

    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise OutputPathError(f"cannot write '{path}': {exc.strerror or exc}") from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())
    finally:
        os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_file(path: str | os.PathLike, data: bytes | str) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` atomically (:func:`staged_file`)."""
    with staged_file(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
