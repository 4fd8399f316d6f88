"""The CLI's live view of :mod:`dcopt.progress` steps: one spinner line on stderr naming the
running step (with a count when it knows its size, e.g. kernels to compile), and, for every step
that took a second or more, one line that stays, so a user sees where a long compile went:

    ✓ O3 › canonicalize › fold-constants  1.1 s
    ✓ compile 9 kernel(s)  1.9 s
    ✓ compile native conv kernels (LLVM -O3)  1.1 s

Shown when stderr is a terminal, unless ``-q``; ``--progress`` forces it (in a CI log only the
lasting lines are printed).
"""

from __future__ import annotations

import time
from typing import Callable

from rich.progress import Progress, ProgressColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

#: Steps at least this long (seconds) leave a line behind.
LASTING = 1.0


class _CountColumn(ProgressColumn):
    """'3/7' for a step that knows its size, nothing for one that does not."""

    def render(self, task) -> Text:
        return Text("" if task.total is None else f"{int(task.completed)}/{int(task.total)}", style="dim")


class _Handle:
    def __init__(self, path: str, total: int | None, changed: Callable[[], None]):
        self.path, self.total, self.done = path, total, 0
        self.changed = changed
        self.reported = 0.0  # seconds of this step that lines of its inner steps already account for
        self.start = time.perf_counter()

    def advance(self, n: int = 1) -> None:
        self.done += n
        self.changed()


class LiveSteps:
    """A :class:`dcopt.progress.Reporter` drawing on ``console`` (rich): one live line naming the
    innermost running step by its path (``O3 › canonicalize › fold-constants``), with a count
    when the step knows its size, and a lasting line for each step of a second or more.
    ``enabled`` is asked at the first step, after the command line was parsed (``-q``/``--progress``)."""

    def __init__(self, console, enabled: Callable[[], bool | None]):
        self.console = console
        self._enabled = enabled
        self._decided: bool | None = None
        self._live: Progress | None = None
        self._task = None
        self._stack: list[_Handle] = []

    def _on(self) -> bool:
        if self._decided is None:
            wanted = self._enabled()
            self._decided = self.console.is_terminal if wanted is None else bool(wanted)
        return self._decided

    def begin(self, name: str, total: int | None = None) -> _Handle:
        parent = self._stack[-1].path if self._stack else ""
        last = parent.rsplit(" › ", 1)[-1]
        handle = _Handle(parent if name == last else f"{parent} › {name}" if parent else name, total, self._show)
        self._stack.append(handle)
        if self._on() and self.console.is_terminal:
            if self._live is None:
                self._live = Progress(SpinnerColumn(), TextColumn("{task.description}"), _CountColumn(),
                                      TimeElapsedColumn(), console=self.console, transient=True)
                self._task = self._live.add_task("", total=None)
                self._live.start()
            self._show()
        return handle

    def _show(self) -> None:
        top = self._stack[-1] if self._stack else None
        if self._live is not None and top is not None:
            self._live.update(self._task, description=top.path, total=top.total, completed=top.done)

    def end(self, handle: _Handle) -> None:
        if handle in self._stack:
            self._stack.remove(handle)
        if not self._on():
            return
        elapsed = time.perf_counter() - handle.start
        nested_same = self._stack and self._stack[-1].path == handle.path
        # a line when this step took a second more than its inner steps' lines already say
        lasting = elapsed - handle.reported >= LASTING and not nested_same
        if lasting:
            self.console.print(f"✓ {handle.path}  {elapsed:.1f} s", markup=False, highlight=False, style="dim")
        if self._stack:
            self._stack[-1].reported += elapsed if lasting else handle.reported
        if self._stack:
            self._show()
        else:
            self.close()

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
