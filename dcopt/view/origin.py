"""Where a node came from: the node of the source model it was imported from, and for a model
exported from PyTorch, the line of Python that made it.

dcopt's IR keeps a node's name (the ONNX node's name, or ``OP_i`` for an unnamed one; for a
``.pt2`` program, the FX node whose value it computes) but not the source model's per-node
metadata, so this reads the source file again, once, on first use:

* ONNX: each top-level node's name, op, domain, position, ``doc_string`` and ``metadata_props``.
  torch.onnx's dynamo exporter records the stack trace there
  (``pkg.torch.onnx.stack_trace``) and the module path (``pkg.torch.onnx.name_scopes``); the
  TorchScript exporter names nodes by module scope (``/layer1/layer1.0/conv1/Conv``) and, with
  ``verbose=True``, puts the source location in ``doc_string``.
* ``.pt2`` (``torch.export.save``): each FX node's target, module stack and stack trace, with the
  user's own frame (the innermost outside installed packages),
  after the importer's decompositions (a ``linear`` is the ``permute`` and ``addmm`` it became,
  each keeping the trace of the line that called it).

A node a pass created has no such origin; the viewer says which stage first had it.
"""

from __future__ import annotations

from pathlib import Path

#: metadata_props keys that hold a stack trace / the module path, by exporter.
_TRACE_KEYS = ("pkg.torch.onnx.stack_trace", "stack_trace")
_SCOPE_KEYS = ("pkg.torch.onnx.name_scopes", "pkg.torch.onnx.class_hierarchy", "namespace")


class Origins:
    def __init__(self, model: str | Path):
        self.model = Path(model)
        self._index: dict[str, dict] | None = None
        self.error: str | None = None

    def _load(self) -> dict[str, dict]:
        if self._index is None:
            try:
                suffix = self.model.suffix.lower()
                self._index = _onnx(self.model) if suffix == ".onnx" else _pt2(self.model) if suffix == ".pt2" else {}
            except Exception as exc:  # the viewer still works without origins; say why they are missing
                self._index, self.error = {}, f"{type(exc).__name__}: {exc}"
        return self._index

    def of(self, labels) -> list[dict]:
        """The source entries of these op labels (those found), in the source's order."""
        index = self._load()
        found = [index[label] for label in dict.fromkeys(labels) if label in index]
        return sorted(found, key=lambda e: e.get("index", 0))


def _onnx(path: Path) -> dict[str, dict]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    out = {}
    for i, n in enumerate(model.graph.node):
        label = n.name or f"{n.op_type}_{i}"  # what onnx_import names the node
        props = {p.key: p.value for p in n.metadata_props}
        trace = next((props[k] for k in _TRACE_KEYS if props.get(k)), None)
        if trace is None and n.doc_string and ("File " in n.doc_string or ".py" in n.doc_string):
            trace = n.doc_string
        out[label] = {"format": "onnx", "name": n.name, "op": n.op_type, "domain": n.domain, "index": i,
                      "inputs": list(n.input), "outputs": list(n.output), "doc_string": n.doc_string,
                      "metadata": props, "stack_trace": trace, "location": _innermost(trace),
                      "scope": next((props[k] for k in _SCOPE_KEYS if props.get(k)), None) or _scope(n.name)}
    return out


def _pt2(path: Path) -> dict[str, dict]:
    import torch

    from dcopt.frontends.torch_import import _target_name, decomposition_table

    # decomposed as load_pt2 does, so the FX names are the ones the import gave the IR
    program = torch.export.load(str(path)).run_decompositions(decomposition_table())
    out = {}
    for i, n in enumerate(program.graph.nodes):
        if n.op != "call_function":
            continue
        stack = n.meta.get("nn_module_stack") or {}
        scope = " / ".join(str(v[0]) if isinstance(v, tuple) else str(v) for v in stack.values()) or None
        out[n.name] = {"format": "torch.export", "name": n.name, "op": _target_name(n.target), "domain": "",
                       "index": i, "stack_trace": n.meta.get("stack_trace"),
                       "location": _innermost(n.meta.get("stack_trace")),
                       "scope": scope, "metadata": {}}
    return out


def _innermost(trace: str | None) -> str | None:
    """The user's line of a stack trace: its last ``File "...", line N`` outside installed packages
    (a ``self.fc(x)`` call, not torch's ``F.linear`` inside it), with its code when given."""
    if not trace:
        return None
    lines = [line.strip() for line in trace.strip().splitlines() if line.strip()]
    files = [i for i, line in enumerate(lines) if line.startswith("File ")]
    if not files:
        return lines[-1]
    user = [i for i in files if "site-packages" not in lines[i] and "dist-packages" not in lines[i]]
    i = (user or files)[-1]
    code = lines[i + 1] if i + 1 < len(lines) and not lines[i + 1].startswith("File ") else ""
    return f"{lines[i]}: {code}" if code else lines[i]


def _scope(name: str) -> str | None:
    """The module path a TorchScript-exported node name encodes (``/layer1/layer1.0/conv1/Conv``)."""
    if name.startswith("/") and name.count("/") > 1:
        return name.rsplit("/", 1)[0].lstrip("/")
    return None
