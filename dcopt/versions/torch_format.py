"""PyTorch state dicts saved with ``torch.save`` (zip archives; legacy pickles for reading only).

Values are read with ``torch.load(weights_only=True)`` -- never arbitrary unpickling -- and only
when torch is installed. For storage, each tensor storage of the zip (``<archive>/data/<key>``,
kept uncompressed by torch) is one payload named after the state-dict key that owns it, with that
tensor's dtype and shape (:mod:`dcopt.versions.torch_pickle` reads ``data.pkl`` without unpickling,
and without torch), so a fine-tune is stored as deltas of the same parameter; nested dicts are
flattened with dots (``{"model": {"fc.weight": t}}`` -> ``model.fc.weight``).
"""

from __future__ import annotations

import io
import struct
import zipfile
from typing import Mapping

import numpy as np

from dcopt.errors import ModelLoadError
from dcopt.versions.formats import ModelFormat, Payload, Structure, numpy_dtype
from dcopt.versions.torch_pickle import TensorRef, tensor_refs

_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


def _torch(file: str):
    try:
        import torch
    except ImportError:
        raise ModelLoadError("reading a PyTorch state dict needs torch (pip install torch)", file=file) from None
    return torch


def _load(data: bytes, file: str) -> dict:
    torch = _torch(file)
    try:
        obj = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - unsafe or damaged pickles are both bad input here
        raise ModelLoadError(f"not a loadable PyTorch state dict (torch.load weights_only=True): "
                             f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", file=file) from None
    if hasattr(obj, "state_dict") and not isinstance(obj, dict):
        obj = obj.state_dict()
    if not isinstance(obj, dict):
        raise ModelLoadError(f"expected a dict of tensors, found {type(obj).__name__}", file=file)
    return obj


def _flatten(obj: Mapping, prefix: str = "") -> dict:
    out = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _to_numpy(tensor) -> np.ndarray:
    torch = _torch("")
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        import ml_dtypes

        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()


def _storage_owners(archive: zipfile.ZipFile, infos) -> dict[str, tuple[str, TensorRef]]:
    """Storage key -> (state-dict key, tensor) of the first tensor using it, from ``data.pkl``
    (read without unpickling); empty when the archive is big-endian or unreadable."""
    names = {i.filename for i in infos}
    pkl = next((n for n in names if n.endswith("/data.pkl") and n.count("/") == 1), None)
    order = next((n for n in names if n.endswith("/byteorder") and n.count("/") == 1), None)
    if pkl is None or (order is not None and archive.read(order).strip() != b"little"):
        return {}
    owners: dict[str, tuple[str, TensorRef]] = {}
    for name, ref in tensor_refs(archive.read(pkl)).items():
        owners.setdefault(ref.storage.key, (name, ref))
    return owners


def _describe(key: str, member: str, nbytes: int, owners) -> tuple[str, str, tuple[int, ...]]:
    """A storage's payload name, dtype and shape: the owning tensor's key, dtype and shape when the
    tensor is the whole storage (deltas then see its real layout: low-rank for a matrix); the key
    with the storage's elements when tensors share or slice it; the zip member as raw bytes when no
    tensor of the state dict owns it."""
    if key not in owners:
        return member, "uint8", (nbytes,)
    name, ref = owners[key]
    dtype = ref.dtype or ref.storage.dtype
    try:
        itemsize = numpy_dtype(dtype).itemsize if dtype else 0
    except (TypeError, AttributeError):
        itemsize = 0
    if not itemsize or nbytes % itemsize:
        return name, "uint8", (nbytes,)
    if ref.whole(nbytes, itemsize):
        return name, dtype, ref.shape
    return name, dtype, (nbytes // itemsize,)


class TorchFormat(ModelFormat):
    name = "torch"

    def sniff(self, head: bytes) -> bool:
        return (head[:4] == b"PK\x03\x04" and (b"data.pkl" in head or b"/data/" in head)) or \
            head.startswith(_LEGACY_MAGIC)

    def payloads(self, data: bytes, file: str) -> list[Payload]:
        if data[:4] != b"PK\x03\x04":
            return []  # a legacy pickle: stored whole
        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
            infos = archive.infolist()
            owners = _storage_owners(archive, infos)
        except zipfile.BadZipFile as exc:
            raise ModelLoadError(f"damaged PyTorch zip archive: {exc}", file=file) from None
        out = []
        for info in infos:
            parts = info.filename.split("/")
            if len(parts) < 3 or parts[-2] != "data" or info.compress_type != zipfile.ZIP_STORED or not info.file_size:
                continue
            name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
            start = info.header_offset + 30 + name_len + extra_len
            name, dtype, shape = _describe(parts[-1], info.filename, info.file_size, owners)
            out.append(Payload(name, dtype, shape, "raw", start, start + info.file_size))
        return sorted(out, key=lambda p: p.start)

    def arrays(self, data: bytes, file: str, path=None) -> dict[str, np.ndarray]:
        torch = _torch(file)
        return {k: _to_numpy(v) for k, v in _flatten(_load(data, file)).items() if isinstance(v, torch.Tensor)}

    def structure(self, data: bytes, file: str) -> Structure:
        torch = _torch(file)
        items = _flatten(_load(data, file))
        return Structure(metadata={k: repr(v)[:200] for k, v in items.items() if not isinstance(v, torch.Tensor)})

    def replace(self, data: bytes, arrays: Mapping[str, np.ndarray], file: str) -> bytes:
        torch = _torch(file)
        obj = _load(data, file)
        for name, array in arrays.items():
            parts, target = name.split("."), obj
            while parts and ".".join(parts) not in target:  # the longest key that exists, then descend
                for i in range(1, len(parts)):
                    if ".".join(parts[:i]) in target and isinstance(target[".".join(parts[:i])], Mapping):
                        target, parts = target[".".join(parts[:i])], parts[i:]
                        break
                else:
                    raise ModelLoadError(f"tensor '{name}' not found in the state dict", file=file)
            key = ".".join(parts)
            old = target[key]
            array = np.ascontiguousarray(array)
            if old.dtype == torch.bfloat16:
                target[key] = torch.from_numpy(array.view(np.int16).copy()).view(torch.bfloat16)
            else:
                target[key] = torch.from_numpy(array.copy()).to(old.dtype)
        buf = io.BytesIO()
        torch.save(obj, buf)
        return buf.getvalue()
