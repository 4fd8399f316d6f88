"""One model in the viewer: its editable step list, the stages they produce, undo and redo.

Why a step list rather than a graph being edited: an edit (a pass or patch inserted after a stage)
is then exactly one more line of a pipeline, so the sequence exports as a file that
``dcopt opt --pipeline`` replays to the same graph, and undo/redo are list operations followed by
re-running the steps after the edit (earlier stages are kept).

The op-level stages run on the model as loaded (what ``dcopt opt`` sees); the lowering stages after
them are what ``dcopt compile`` lowers: sizes specialized (symbolic dims at 1 unless bound) before
the steps, then its loop-level passes, so a node's loop expansion and generated kernel (and its
measured time, whose step names are the build's) are the ones a build has.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import Mapping

from dcopt.errors import DcoptError, InputError
from dcopt.ir.graph import Graph
from dcopt.view.stages import LOWERING, USER, Stage, Step, flatten, lowering_stages, run_step


class ViewSession:
    """The model, its steps, and their stages. Methods are serialized by one lock (the server is
    threaded; a browser may fire requests while a previous edit still runs)."""

    def __init__(self, model: str | Path, pipeline=("O3",), *, dims: Mapping[str, int] | None = None,
                 lower: bool = True, profile: list[dict] | None = None):
        from dcopt import api
        from dcopt.backends.cpu.specialize import input_bindings

        self.model = str(model)
        self.input = api.load_graph(self.model)
        self.bindings = input_bindings(self.input, dims)  # unknown dim names: an error listing the model's
        self.lower = lower
        self.profile = list(profile or [])
        self.steps: list[Step] = flatten(list(pipeline))
        self.undo_stack: list[tuple[str, int, Step]] = []
        self.redo_stack: list[tuple[str, int, Step]] = []
        self.lock = threading.RLock()
        self.stages: list[Stage] = [Stage(0, None, self.input)]
        self.version = 0  # bumped by every edit: caches keyed by stage contents use it
        self._recompute(1)

    # -- stages ---------------------------------------------------------------------------------
    @property
    def op_stages(self) -> list[Stage]:
        """Stage 0 and the stages of the step list (not the lowering)."""
        return self.stages[:len(self.steps) + 1]

    @property
    def final(self) -> Graph:
        """The graph after the last step (what an exported model or a replayed pipeline gives)."""
        return self.op_stages[-1].graph

    def stage(self, index: int) -> Stage:
        if not 0 <= index < len(self.stages):
            raise InputError(f"no stage {index}; stages are 0..{len(self.stages) - 1}")
        return self.stages[index]

    def lowered(self, name: str) -> Graph | None:
        """The graph after the lowering stage called ``name`` (None if lowering is off or failed before)."""
        found = [s for s in self.stages[len(self.steps) + 1:] if s.step.label == name and s.error is None]
        return found[-1].graph if found else None

    def _recompute(self, start: int) -> None:
        """Re-run steps from ``start`` (1-based stage index) on, then the lowering."""
        stages = self.stages[:start]
        for i in range(start, len(self.steps) + 1):
            stages.append(run_step(self.steps[i - 1], stages[-1].graph, i))
        if self.lower:
            stages.extend(lowering_stages(self._lowering_input(stages[-1].graph), len(stages), self.bindings))
        self.stages = stages
        self.version += 1

    def _lowering_input(self, final: Graph) -> Graph:
        """What the lowering starts from. ``dcopt compile`` specializes sizes *before* the pipeline
        (implementation choices depend on them), so a model with symbolic dims runs the steps again
        on its specialized copy; a static model's final stage is that graph already."""
        if not self.bindings:
            return final
        from dcopt.backends.cpu.specialize import specialize

        graph = specialize(self.input, self.bindings)
        for step in self.steps:
            graph = run_step(step, graph, 0).graph
        return graph

    # -- edits ----------------------------------------------------------------------------------
    def check_editable(self, index: int) -> None:
        if not 0 <= index <= len(self.steps):
            raise InputError(f"stage {index} is {'a lowering' if index < len(self.stages) else 'not a'} stage; "
                             f"passes and patches are inserted after stages 0..{len(self.steps)} (op level)")

    def insert(self, after: int, step: Step) -> int:
        """Insert ``step`` after stage ``after``; returns the new stage's index."""
        with self.lock:
            self.check_editable(after)
            step = replace(step, origin=USER)
            step.as_pass()  # an unknown pass or a bad URI: an error now, before anything changes
            self.steps.insert(after, step)
            try:
                self._recompute(after + 1)
            except DcoptError:
                del self.steps[after]
                self._recompute(after + 1)
                raise
            self.undo_stack.append(("insert", after, step))
            self.redo_stack.clear()
            return after + 1

    def undo(self) -> int | None:
        """Undo the last edit; returns the stage to show, None when there is nothing to undo."""
        with self.lock:
            if not self.undo_stack:
                return None
            action, at, step = self.undo_stack.pop()
            del self.steps[at]
            self._recompute(at + 1)
            self.redo_stack.append((action, at, step))
            return at

    def redo(self) -> int | None:
        with self.lock:
            if not self.redo_stack:
                return None
            action, at, step = self.redo_stack.pop()
            self.steps.insert(at, step)
            self._recompute(at + 1)
            self.undo_stack.append((action, at, step))
            return at + 1

    def preview(self, after: int, step: Step) -> Stage:
        """What inserting ``step`` after stage ``after`` would give (nothing changes)."""
        with self.lock:
            self.check_editable(after)
            return run_step(replace(step, origin=USER), self.stages[after].graph, after + 1)

    @property
    def name(self) -> str:
        return Path(self.model).name

    def summary(self) -> dict:
        return {"model": self.model, "name": self.name, "bindings": self.bindings,
                "stages": [s.summary(self.bindings) for s in self.stages], "editable_until": len(self.steps),
                "can_undo": bool(self.undo_stack), "can_redo": bool(self.redo_stack), "version": self.version,
                "lowering": self.lower, "profile": bool(self.profile),
                "edits": [s.to_dict() for s in self.steps if s.origin == USER]}


__all__ = ["LOWERING", "ViewSession"]
