"""Format sniffing by content and the byte-exact split of a file into skeleton and payloads."""

import io
import json
import struct

import numpy as np
import pytest

from dcopt.errors import ModelLoadError
from dcopt.versions.formats import sniff
from dcopt.versions.params import ModelFile, assemble
from tests.versions.models import mlp, weights


def _roundtrip(model: ModelFile) -> bytes:
    skeleton, offsets = model.skeleton()
    return assemble(skeleton, [(o, model.blob(p)) for o, p in zip(offsets, model.payloads)])


def test_onnx_payloads_cover_raw_and_varint_initializers():
    data = mlp(weights())
    model = ModelFile(data, "m.onnx")
    assert model.format.name == "onnx"
    found = {p.name: (p.dtype, p.shape, p.encoding) for p in model.payloads}
    assert found == {"w1": ("float32", (32, 64), "raw"), "b1": ("float32", (64,), "raw"),
                     "w2": ("float32", (64, 16), "raw"), "steps": ("int64", (2,), "varint")}
    assert _roundtrip(model) == data
    np.testing.assert_array_equal(model.arrays["steps"], [3, -7])


def safetensors_bytes(tensors: dict, metadata=None) -> bytes:
    header, blobs, pos = {}, [], 0
    for name, array in tensors.items():
        blob = np.ascontiguousarray(array).tobytes()
        header[name] = {"dtype": {"float32": "F32", "int64": "I64"}[array.dtype.name], "shape": list(array.shape),
                        "data_offsets": [pos, pos + len(blob)]}
        blobs.append(blob)
        pos += len(blob)
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def test_safetensors_sniffed_and_split_exactly():
    w = weights()
    data = safetensors_bytes({"w1": w["w1"], "steps": w["steps"]}, {"step": "10"})
    model = ModelFile(data, "weights.bin")  # the name says nothing: the content decides
    assert model.format.name == "safetensors"
    assert _roundtrip(model) == data
    np.testing.assert_array_equal(model.arrays["w1"], w["w1"])
    assert model.structure.metadata == {"step": "10"}
    replaced = model.format.replace(data, {"w1": w["w1"] * 2}, "x")
    np.testing.assert_array_equal(ModelFile(replaced).arrays["w1"], w["w1"] * 2)


def test_torch_state_dict_sniffed_and_split_exactly():
    torch = pytest.importorskip("torch")
    buf = io.BytesIO()
    torch.save({"fc.weight": torch.arange(12, dtype=torch.float32).reshape(3, 4), "epoch": 3}, buf)
    data = buf.getvalue()
    model = ModelFile(data, "ckpt")
    assert model.format.name == "torch"
    assert model.payloads and _roundtrip(model) == data
    np.testing.assert_array_equal(model.arrays["fc.weight"], np.arange(12, dtype=np.float32).reshape(3, 4))
    assert model.structure.metadata == {"epoch": "3"}


def test_unknown_content_is_a_located_error():
    with pytest.raises(ModelLoadError, match="file notes.txt: not a model file dcopt knows"):
        sniff(b"hello, these are my notes", "notes.txt")
