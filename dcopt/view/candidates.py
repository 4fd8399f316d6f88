"""The passes and patches that apply at a node, and the near misses that say why one did not.

A stage's graph is tried once with every op-level pass and every patch that runs without
arguments (patches with required parameters are listed as needing them; the page offers every
parameter and pass option as a form field, see :mod:`~dcopt.view.step_params`): each trial runs on a
copy, exactly as inserting that step would run, and keeps which nodes it added, removed or
rewired and what it refused, where and why. A node's candidates are then read from those trials:
*applies* when the step changes the node, *near miss* when the step refused at the node (the
reason is the pass's or the rewrite rule's), *elsewhere* when it changes only other nodes.
Trials are cached per stage until the next edit.
"""

from __future__ import annotations

from dcopt.errors import DcoptError
from dcopt.view.details import _op_labels
from dcopt.view.graph_json import find_node
from dcopt.view.stages import Step, run_step


def op_level_passes() -> list[str]:
    """Registered passes that work on op-level graphs (the loop-level ones of the lowering are not)."""
    from dcopt.driver import LOWERING
    from dcopt.passes.base import available_passes

    loop_level = {name for name, _ in LOWERING} - {"select-impl"}
    return sorted(set(available_passes()) - loop_level)


def patch_specs() -> list[dict]:
    """Every registered patch: its name, kind, summary, its parameters as form fields and the
    required ones (without which it is not tried)."""
    from dcopt.passes.patches import available_patches
    from dcopt.view.step_params import describe

    return [{"name": p.name, "kind": p.kind, "summary": p.summary, "params": describe(p.params),
             "requires": [q.name for q in p.params if q.required]} for p in available_patches().values()]


class Candidates:
    def __init__(self, session):
        self.session = session
        self._trials: dict[tuple[int, int], list[dict]] = {}

    def trials(self, stage_index: int) -> list[dict]:
        s = self.session
        key = (s.version, stage_index)
        if key not in self._trials:
            s.check_editable(stage_index)
            graph = s.stage(stage_index).graph
            trials = [self._try(Step("pass", name), graph, stage_index) for name in op_level_passes()]
            for p in patch_specs():
                if p["requires"]:
                    trials.append({"kind": "patch", "spec": p["name"], "summary": p["summary"], "modified": False,
                                   "touched": [], "refusals": [], "error": None,
                                   "needs": f"parameter(s) {', '.join(p['requires'])}: give the URI"})
                else:
                    trials.append(self._try(Step("patch", p["name"]), graph, stage_index, p["summary"]))
            self._trials = {k: v for k, v in self._trials.items() if k[0] == s.version}
            self._trials[key] = trials
        return self._trials[key]

    @staticmethod
    def _try(step: Step, graph, index: int, summary: str = "") -> dict:
        from dcopt.passes.patches.apply import node_changes

        try:
            stage = run_step(step, graph, index, validate=False)  # validated when previewed or applied
        except DcoptError as exc:
            return {"kind": step.kind, "spec": step.spec, "summary": summary, "modified": False, "touched": [],
                    "refusals": [], "error": str(exc)}
        added, removed, rewired = node_changes(graph, stage.graph) if stage.modified else ([], [], [])
        refusals = [r for record in stage.records for r in record["refusals"]]
        return {"kind": step.kind, "spec": step.spec, "summary": summary, "modified": stage.modified,
                "touched": sorted(set(removed) | set(rewired)), "added": len(added), "removed": len(removed),
                "rewired": len(rewired), "refusals": refusals, "error": None}

    def at(self, stage_index: int, node_id: str) -> dict:
        """{"applies": [...], "near": [...], "elsewhere": [...], "needs": [...]} for one node."""
        found = find_node(self.session.stage(stage_index).graph, node_id)
        if found is None:
            return {"applies": [], "near": [], "elsewhere": [], "needs": []}
        _, node = found
        labels = set(_op_labels(node)) | {node.label}
        applies, near, elsewhere, needs, failed = [], [], [], [], []
        for t in self.trials(stage_index):
            entry = {"kind": t["kind"], "spec": t["spec"], "summary": t["summary"]}
            reasons = [why for where, why in t["refusals"] if where in labels]
            if t.get("needs"):
                needs.append({**entry, "reason": t["needs"]})
            elif t["error"]:
                failed.append({**entry, "reason": t["error"]})
            elif t["modified"] and labels & set(t["touched"]):
                applies.append({**entry, "changes": f"+{t['added']} -{t['removed']} ~{t['rewired']} nodes"})
            elif reasons:
                near.append({**entry, "reasons": reasons[:5]})
            elif t["modified"]:
                elsewhere.append({**entry, "changes": f"+{t['added']} -{t['removed']} ~{t['rewired']} nodes"})
        return {"applies": applies, "near": near, "elsewhere": elsewhere, "needs": needs, "failed": failed}
