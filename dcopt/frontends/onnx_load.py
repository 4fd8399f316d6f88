"""Reading .onnx files safely.

Turns every way a file can be bad (missing, empty, truncated, not protobuf, external data that
escapes the model's folder or is missing) into a :class:`ModelLoadError` naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx
from onnx import external_data_helper

from dcopt.errors import ModelLoadError


def _tensors_with_external_data(model: onnx.ModelProto):
    for tensor in external_data_helper._get_all_tensors(model):
        if external_data_helper.uses_external_data(tensor):
            yield tensor


def check_external_data(model: onnx.ModelProto, base_dir: Path, file: str) -> None:
    """Refuse external data locations outside ``base_dir`` (path traversal, absolute paths,
    symlinks pointing out) and report missing data files, before anything is read."""
    root = base_dir.resolve()
    for tensor in _tensors_with_external_data(model):
        info = external_data_helper.ExternalDataInfo(tensor)
        location = info.location
        where = f"tensor '{tensor.name}'"
        if not location:
            raise ModelLoadError(f"{where} uses external data but names no location", file=file)
        if os.path.isabs(location) or location.startswith(("/", "\\")):
            raise ModelLoadError(f"{where}: external data location '{location}' is absolute; "
                                 "it must be relative to the model's folder", file=file)
        target = (root / location).resolve()
        if not target.is_relative_to(root):
            raise ModelLoadError(f"{where}: external data location '{location}' points outside the model's "
                                 f"folder {root}", file=file)
        if not target.is_file():
            raise ModelLoadError(f"{where}: external data file '{location}' not found next to the model", file=file)
        size = target.stat().st_size
        end = (info.offset or 0) + (info.length or 0)
        if end > size:
            raise ModelLoadError(f"{where}: external data [{info.offset}, {end}) lies past the end of "
                                 f"'{location}' ({size} bytes)", file=file)


def load_onnx(path: str | os.PathLike) -> onnx.ModelProto:
    """Load an ONNX model with its external data; raise ModelLoadError on any bad input."""
    path = Path(path)
    file = str(path)
    if not path.exists():
        raise ModelLoadError("file not found", file=file)
    if path.is_dir():
        raise ModelLoadError("is a directory, expected an .onnx file", file=file)
    data = path.read_bytes()
    if not data:
        raise ModelLoadError("file is empty", file=file)
    try:
        model = onnx.ModelProto()
        model.ParseFromString(data)
    except Exception as exc:
        raise ModelLoadError(f"not a valid ONNX model (truncated or not protobuf): {type(exc).__name__}: {exc}",
                             file=file) from None
    if not model.HasField("graph") or (not model.graph.node and not model.graph.output):
        raise ModelLoadError("not a valid ONNX model: it has no graph (truncated or another file type?)", file=file)
    check_external_data(model, path.parent, file)
    try:
        external_data_helper.load_external_data_for_model(model, str(path.parent))
    except Exception as exc:
        raise ModelLoadError(f"could not read external data: {exc}", file=file) from None
    return model
