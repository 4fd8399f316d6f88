"""Progress of the compiler's long steps, for whoever is watching.

The compiler announces its steps (importing a model, each pass, generating code, compiling
kernels, benchmark rounds) with :func:`step`; it never prints. A front end that wants to show
them installs a :class:`Reporter` for the duration of one command with :func:`reporting` (the
CLI's live display, :mod:`dcopt.cli.progress_display`). With no reporter installed, as in
library use and tests, :func:`step` costs one context-variable read.

Why a context variable rather than a ``progress=`` argument on every function: the steps sit
five calls deep (CLI -> compile -> build -> driver -> pass manager), and a display is a concern
of the outermost caller only; a context variable keeps that out of every signature between,
stays per-thread/per-task, and never leaks past the ``with`` that set it.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator, Protocol


class Step(Protocol):
    def advance(self, n: int = 1) -> None: ...


class Reporter(Protocol):
    """What a display implements: a step begins (``total`` units of work when known, e.g. kernels
    to compile) and ends; nested steps are allowed (a pass inside a pipeline inside a compile)."""

    def begin(self, name: str, total: int | None = None) -> Step: ...

    def end(self, step: Step) -> None: ...


class _NoStep:
    def advance(self, n: int = 1) -> None:
        pass


_NO_STEP = _NoStep()
_reporter: ContextVar[Reporter | None] = ContextVar("dcopt_progress_reporter", default=None)


@contextmanager
def step(name: str, total: int | None = None) -> Iterator[Step]:
    """Announce a step of work; ``with step("compile kernels", total=n) as s: ... s.advance()``."""
    reporter = _reporter.get()
    if reporter is None:
        yield _NO_STEP
        return
    handle = reporter.begin(name, total)
    try:
        yield handle
    finally:
        reporter.end(handle)


@contextmanager
def reporting(reporter: Reporter | None) -> Iterator[None]:
    """Send the steps announced inside this block to ``reporter`` (None: to nobody)."""
    token = _reporter.set(reporter)
    try:
        yield
    finally:
        _reporter.reset(token)
