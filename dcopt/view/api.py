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
    """``build`` and ``run``: a build (directory or cache key prefix) and a recorded run (index,
    id prefix or label) the page opens side by side; checked here, so a wrong one is an error
    before anything is served."""

    def __init__(self, session: ViewSession, build: str | None = None, run: str | None = None):
        from dcopt.view.build_panel import find_build
        from dcopt.view.run_panel import find_run

        self.session = session
        self.details = NodeDetails(session)
        self.candidates = Candidates(session)
        self._elements: dict[tuple[int, int], dict] = {}
        self.build_ref = find_build(build).key if build else None
        self.run_ref = find_run(run).id if run else None

    def overview(self) -> dict:
        from dcopt.view.step_params import all_pass_options

        passes = op_level_passes()
        return {**self.session.summary(), "passes": passes, "pass_options": all_pass_options(passes),
                "patches": patch_specs(), "open": {"build": self.build_ref, "run": self.run_ref}}

    # -- a build and a run, side by side ----------------------------------------------------------
    def build(self, ref: str) -> dict:
        from dcopt.view.build_panel import build_panel

        with self.session.lock:
            return build_panel(ref, self.session)

    def run(self, ref: str) -> dict:
        from dcopt.view.run_panel import run_panel

        return run_panel(ref)

    def builds_and_runs(self) -> dict:
        """What the panel's pickers offer: this model's builds and recorded runs."""
        from dcopt.view.build_panel import builds_of
        from dcopt.view.run_panel import runs_of

        return {"builds": builds_of(self.session.model), "runs": runs_of(self.session.model)}

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

    def preview(self, after: int, kind: str, spec: str, params: dict | None = None) -> dict:
        step = _step(kind, spec, params)
        with self.session.lock:
            stage = self.session.preview(after, step)
            before = self.session.stage(after).graph
            return {"name": stage.name, "modified": stage.modified, "records": stage.records,
                    "elements": graph_elements(stage.graph, self.session.bindings),
                    "changes": changes(before, stage.graph)}

    def apply(self, after: int, kind: str, spec: str, params: dict | None = None) -> dict:
        index = self.session.insert(after, _step(kind, spec, params))
        return {"stage": index, "session": self.overview()}

    def undo(self) -> dict:
        return {"stage": self.session.undo(), "session": self.overview()}

    def redo(self) -> dict:
        return {"stage": self.session.redo(), "session": self.overview()}

    def pipeline_file(self) -> str:
        from dcopt.view.pipeline_file import render

        return render(self.session.steps, self.session.model)


def _step(kind: str, spec: str, params: dict | None = None) -> Step:
    """The step a request names: a pass or patch, with the values of its form's fields."""
    from dcopt.view.step_params import step_from_form

    if kind not in ("pass", "patch"):
        raise InputError(f"step kind must be 'pass' or 'patch', got {kind!r}")
    if not isinstance(spec, str) or not spec.strip():
        raise InputError("a step needs a pass name or a patch URI")
    if params is not None and not isinstance(params, dict):
        raise InputError(f"a step's params must be an object of name: value, got {type(params).__name__}")
    return step_from_form(kind, spec.strip(), params)
