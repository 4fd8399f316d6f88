"""What the viewer's page asks for, as plain data: one function per request, shared by the live
server (:mod:`dcopt.view.server`, as JSON over HTTP) and the static export (:mod:`dcopt.view.page`,
precomputed into the file), so both show the same thing."""

from __future__ import annotations

import time

from dcopt.errors import InputError
from dcopt.view.candidates import Candidates, op_level_passes, patch_specs
from dcopt.view.details import NodeDetails
from dcopt.view.graph_json import changes, graph_elements
from dcopt.view.session import ViewSession
from dcopt.view.stages import Step


class ViewerAPI:
    def __init__(self, session: ViewSession):
        self.session = session
        self.details = NodeDetails(session)
        self.candidates = Candidates(session)
        self._elements: dict[tuple[int, int], dict] = {}

    def overview(self) -> dict:
        return {**self.session.summary(), "passes": op_level_passes(), "patches": patch_specs()}

    def stage(self, index: int) -> dict:
        """A stage: its graph as elements, what its step changed, its pass records."""
        s = self.session
        with s.lock:
            stage = s.stage(index)
            start = time.perf_counter()
            payload = {**stage.summary(s.bindings), "records": stage.records, "elements": self._graph(index),
                       "changes": changes(s.stage(index - 1).graph, stage.graph) if index and stage.modified
                       else {"added": [], "removed": [], "rewired": []},
                       "editable": index <= len(s.steps)}
            payload["server_ms"] = round(1e3 * (time.perf_counter() - start), 1)
            return payload

    def _graph(self, index: int) -> dict:
        key = (self.session.version, index)
        if key not in self._elements:
            self._elements = {k: v for k, v in self._elements.items() if k[0] == key[0]}
            self._elements[key] = graph_elements(self.session.stage(index).graph, self.session.bindings)
        return self._elements[key]

    def node(self, index: int, node_id: str) -> dict:
        with self.session.lock:
            return self.details.of(index, node_id)

    def node_candidates(self, index: int, node_id: str) -> dict:
        with self.session.lock:
            return self.candidates.at(index, node_id)

    def preview(self, after: int, kind: str, spec: str) -> dict:
        step = _step(kind, spec)
        with self.session.lock:
            stage = self.session.preview(after, step)
            before = self.session.stage(after).graph
            return {"name": stage.name, "modified": stage.modified, "records": stage.records,
                    "elements": graph_elements(stage.graph, self.session.bindings),
                    "changes": changes(before, stage.graph)}

    def apply(self, after: int, kind: str, spec: str) -> dict:
        index = self.session.insert(after, _step(kind, spec))
        return {"stage": index, "session": self.overview()}

    def undo(self) -> dict:
        return {"stage": self.session.undo(), "session": self.overview()}

    def redo(self) -> dict:
        return {"stage": self.session.redo(), "session": self.overview()}

    def pipeline_file(self) -> str:
        from dcopt.view.pipeline_file import render

        return render(self.session.steps, self.session.model)


def _step(kind: str, spec: str) -> Step:
    if kind not in ("pass", "patch"):
        raise InputError(f"step kind must be 'pass' or 'patch', got {kind!r}")
    if not isinstance(spec, str) or not spec.strip():
        raise InputError("a step needs a pass name or a patch URI")
    return Step(kind, spec.strip())
