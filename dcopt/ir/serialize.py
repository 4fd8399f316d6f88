"""Lossless JSON (de)serialization of the IR.

Tensors (parameters, tensor attributes) are stored as base64 of their raw bytes with dtype and
shape, so a round trip is bit-exact, NaN payloads included. Subgraphs nest. Attribute values keep
their Python type through a small tagged encoding (tuples vs scalars, floats vs ints).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np

from dcopt.errors import ModelLoadError
from dcopt.ir import dtypes
from dcopt.ir.graph import Graph, Node
from dcopt.ir.types import OptionalType, SequenceType, TensorType

FORMAT = "dcopt-ir"
FORMAT_VERSION = 1


def _encode_array(a: np.ndarray) -> dict:
    dtype = dtypes.from_numpy(a.dtype)
    if dtype == "string":
        return {"dtype": dtype, "shape": list(a.shape), "strings": [str(s) if not isinstance(s, bytes) else s.decode() for s in a.ravel()]}
    return {"dtype": dtype, "shape": list(a.shape), "b64": base64.b64encode(np.ascontiguousarray(a).tobytes()).decode()}


def _decode_array(d: dict) -> np.ndarray:
    if d["dtype"] == "string":
        return np.array(d["strings"], dtype=object).reshape(d["shape"])
    raw = base64.b64decode(d["b64"])
    return np.frombuffer(raw, dtype=dtypes.to_numpy(d["dtype"])).reshape(d["shape"]).copy()


def _encode_attr(v: Any) -> Any:
    if isinstance(v, bool):
        return {"int": int(v)}
    if isinstance(v, (int, np.integer)):
        return {"int": int(v)}
    if isinstance(v, (float, np.floating)):
        return {"float": float(v) if np.isfinite(v) else repr(float(v))}
    if isinstance(v, str):
        return {"str": v}
    if isinstance(v, bytes):
        return {"bytes": base64.b64encode(v).decode()}
    if isinstance(v, np.ndarray):
        return {"tensor": _encode_array(v)}
    if isinstance(v, Graph):
        return {"graph": graph_to_dict(v)}
    if isinstance(v, tuple):
        return {"list": [_encode_attr(x) for x in v]}
    if isinstance(v, (TensorType, SequenceType, OptionalType)):
        return {"type": _encode_type(v)}
    raise TypeError(f"cannot serialize attribute value of type {type(v).__name__}")


def _decode_attr(d: dict) -> Any:
    (tag, v), = d.items()
    if tag == "int":
        return int(v)
    if tag == "float":
        return float(v)
    if tag == "str":
        return v
    if tag == "bytes":
        return base64.b64decode(v)
    if tag == "tensor":
        return _decode_array(v)
    if tag == "graph":
        return graph_from_dict(v)
    if tag == "list":
        return tuple(_decode_attr(x) for x in v)
    if tag == "type":
        return _decode_type(v)
    raise ValueError(f"unknown attribute tag {tag!r}")


def _encode_type(t) -> dict:
    if isinstance(t, SequenceType):
        return {"sequence": _encode_type(t.elem)}
    if isinstance(t, OptionalType):
        return {"optional": _encode_type(t.elem)}
    return {"dtype": t.dtype, "shape": None if t.shape is None else list(t.shape)}


def _decode_type(d: dict):
    if "sequence" in d:
        return SequenceType(_decode_type(d["sequence"]))
    if "optional" in d:
        return OptionalType(_decode_type(d["optional"]))
    return TensorType(d["dtype"], None if d["shape"] is None else tuple(d["shape"]))


def graph_to_dict(graph: Graph) -> dict:
    containers = {}
    for name, c in graph.containers.items():
        entry = {"type": _encode_type(c.type)}
        if c.data is not None:
            entry["data"] = _encode_array(c.data)
        containers[name] = entry
    return {
        "name": graph.name,
        "opset": graph.opset,
        "doc": graph.doc,
        "metadata": graph.metadata,
        "inputs": graph.inputs,
        "outputs": graph.outputs,
        "containers": containers,
        "nodes": [
            {"op": n.op, "domain": n.domain, "name": n.name, "inputs": list(n.inputs), "outputs": list(n.outputs),
             "attrs": {k: _encode_attr(v) for k, v in n.attrs.items()}}
            for n in graph.nodes
        ],
    }


def graph_from_dict(d: dict) -> Graph:
    g = Graph(d["name"], d["opset"])
    g.doc = d.get("doc", "")
    g.metadata = dict(d.get("metadata", {}))
    for name, entry in d["containers"].items():
        data = _decode_array(entry["data"]) if "data" in entry else None
        g.add_container(name, _decode_type(entry["type"]), data)
    g.inputs = list(d["inputs"])
    g.outputs = list(d["outputs"])
    for n in d["nodes"]:
        g.add_node(Node(n["op"], tuple(n["inputs"]), tuple(n["outputs"]),
                        {k: _decode_attr(v) for k, v in n["attrs"].items()}, n.get("name", ""), n.get("domain", "")))
    return g


def dumps(graph: Graph, indent: int | None = None) -> str:
    return json.dumps({"format": FORMAT, "version": FORMAT_VERSION, "graph": graph_to_dict(graph)}, indent=indent)


def loads(text: str, file: str | None = None) -> Graph:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"not valid JSON: {exc}", file=file) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ModelLoadError(f"not a dcopt IR file (expected \"format\": \"{FORMAT}\")", file=file)
    try:
        if doc.get("version", 0) > FORMAT_VERSION:
            raise ModelLoadError(f"IR format version {doc.get('version')} is newer than this dcopt supports "
                                 f"({FORMAT_VERSION})", file=file)
        graph = graph_from_dict(doc["graph"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ModelLoadError(f"malformed dcopt IR file: {type(exc).__name__}: {exc}", file=file) from None
    from dcopt.ir.verify import verify

    verify(graph, file=file)
    return graph


def save(graph: Graph, path) -> None:
    """Write atomically: a half-written file never replaces a good one."""
    from dcopt.outputs import write_file

    write_file(path, dumps(graph))


def load(path) -> Graph:
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError("file not found", file=str(path))
    return loads(path.read_text(), file=str(path))
