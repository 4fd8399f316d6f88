"""A compiled build, as the viewer's build panel shows it beside a benchmark run.

A build directory (``dcopt compile MODEL -o DIR``, or a cache build by key prefix) is read through
the build catalog (:meth:`~dcopt.kernels.builds.BuildCatalog.find`, which checks its format):
the manifest (model, pipeline, patches, sizes, per-pass summary, toolchain, memory), and
``program.json``'s schedule, one row per step with the kernel it runs and that kernel's source
(the numba function of ``kernels.py`` or the LLVM functions of ``kernels.ll``).

Each step is linked to the graph nodes it covers, so a kernel in the panel can be shown in the
graph. A step is named after the top-level node of the lowered graph it runs (``Conv__15/conv``),
whose loop nodes are named ``OP/...`` after the op node ``expand`` made them of; so the viewer's
own lowering (:meth:`~dcopt.view.session.ViewSession.lowered`) gives a step's op nodes when it
lowered the same schedule, and the step's name (its part before the last ``/``) does otherwise.
The op nodes are then found in the last op-level stage, by label: exact when the build was made
with the viewer's pipeline, best effort (and said so) when not.
"""

from __future__ import annotations

from pathlib import Path

from dcopt.ir.groups import is_group
from dcopt.kernels.sources import kernel_sources

#: Fields of the manifest the panel shows as they are.
_SUMMARY = ("dcopt", "pipeline", "pipeline_applied", "patches", "bindings", "target", "steps", "not_native",
            "memory", "compile_seconds", "module_key", "native_key", "values")
_TOOLCHAIN = ("python", "numpy", "numba", "llvmlite", "cpu_cpu")


def find_build(ref: str):
    """The build ``ref`` names (a directory, or a cache build's key prefix); an error that names
    ``ref`` and says what is wrong otherwise (missing, not a build, another format)."""
    from dcopt.backends.cpu.source import cache_root
    from dcopt.kernels.builds import BuildCatalog

    return BuildCatalog(cache_root()).find(str(ref))


def builds_of(model: str) -> list[dict]:
    """The builds of ``model`` the catalog knows (output builds and the cache's), latest first:
    those whose manifest names the model's file digest, or failing a digest, its name."""
    from dcopt.backends.cpu.source import cache_root
    from dcopt.kernels.builds import BuildCatalog

    digest, name = _model_digest(model), Path(model).stem
    out = []
    for b in BuildCatalog(cache_root()).all():
        if b.status == "ok" and (b.model_sha == digest or (not b.model_sha and b.model == name)):
            out.append({"ref": b.key, "path": str(b.path), "kind": b.kind, "pipeline": b.manifest.get("pipeline"),
                        "patches": b.manifest.get("patches", []), "bindings": b.manifest.get("bindings", {}),
                        "last_used": b.last_used})
    return out


def _model_digest(model: str) -> str:
    from dcopt.integrity import sha256_file

    try:
        return sha256_file(Path(model))
    except OSError:
        return ""


def build_panel(ref: str, session) -> dict:
    """What the panel shows of build ``ref``, linked to ``session``'s graph (see the module doc)."""
    from dcopt.kernels.diff import _program

    info = find_build(ref)
    manifest, path = info.manifest, Path(info.path)
    program = _program(path)
    sources = kernel_sources(path)
    links = StepLinks(session)
    steps = []
    for i, s in enumerate(program.get("steps", [])):
        params = s.get("params") if isinstance(s.get("params"), dict) else {}
        kernel = params.get("kernel") if s.get("kind") == "kernel" else params.get("kernel_name")
        label = s.get("label", f"step{i}")
        steps.append({"index": i, "label": label, "kind": s.get("kind"), "kernel": kernel,
                      "language": ("python (numba)" if s.get("kind") == "kernel" else "LLVM IR") if kernel else "",
                      "source": sources.get(kernel, "") if kernel else "", "inputs": s.get("inputs", []),
                      "outputs": s.get("outputs", []), "nodes": links.nodes(label)})
    model = manifest.get("model") or {}
    digest = _model_digest(session.model)
    return {"ref": info.key, "path": str(path), "kind": info.kind, "size": info.size,
            "model": model, "same_model": bool(digest) and model.get("sha256") == digest,
            "same_pipeline": _same_pipeline(manifest, session),
            **{k: manifest.get(k) for k in _SUMMARY},
            "toolchain": {k: v for k, v in (manifest.get("toolchain") or {}).items() if k in _TOOLCHAIN},
            "passes": manifest.get("passes", []), "steps_list": steps, "link_stage": links.stage_index}


def _same_pipeline(manifest: dict, session) -> bool:
    """Whether the build ran the viewer's steps on the viewer's sizes (then links are exact)."""
    user_edits = any(s.origin == "user" for s in session.steps)
    viewer = ",".join(s.label for s in session.steps if s.origin != "user")
    applied = manifest.get("pipeline_applied") or manifest.get("pipeline") or ""
    from dcopt.view.stages import flatten

    try:
        built = ",".join(s.label for s in flatten([applied])) if applied else ""
    except Exception:  # a pipeline this dcopt no longer knows: not the same
        return False
    return (not user_edits and not manifest.get("patches") and built == viewer
            and (manifest.get("bindings") or {}) == dict(session.bindings))


class StepLinks:
    """Step label -> ids of the op nodes it covers in the last op-level stage."""

    def __init__(self, session):
        from dcopt.view.details import walk
        from dcopt.view.graph_json import iter_nodes

        self.stage_index = len(session.steps)
        graph = session.stage(self.stage_index).graph
        self._ids: dict[str, list[str]] = {}
        for nid, node in iter_nodes(graph):
            if not is_group(node):
                self._ids.setdefault(node.label, []).append(nid)
        lowered = session.lowered("plan-memory")
        self._ops: dict[str, set[str]] = {}
        for top in (lowered.nodes if lowered is not None else ()):
            members = [top] + (list(walk(top.attrs["body"])) if is_group(top) else [])
            self._ops[top.label] = {m.label.rsplit("/", 1)[0] for m in members
                                    if m.domain == "dcopt.loop" and "/" in m.label}

    def nodes(self, step_label: str) -> list[str]:
        ops = self._ops.get(step_label) or set()
        name = step_label
        while not ops and name:  # not in the viewer's lowering: the step's own name, shortened until an op has it
            ops = {name} if name in self._ids else set()
            name = name.rsplit("/", 1)[0] if "/" in name else ""
        return sorted({nid for op in ops for nid in self._ids.get(op, ())})
