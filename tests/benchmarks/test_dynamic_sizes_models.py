"""One build for every size on real transformers architectures (tiny configs, exported with
dynamic batch and sequence axes): compiled once, run at several sizes through the compiled
path against onnxruntime, never compiled again (:mod:`benchmarks.dynamic_sizes` times the same)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
ort = pytest.importorskip("onnxruntime")

import dcopt  # noqa: E402
from benchmarks.dynamic_sizes import export_dynamic, feeds_at  # noqa: E402

#: BERT (position Slice [:seq] of a 128-row table, checked per size), GPT-2 (Conv1D over
#: batch*seq rows), Llama (rotary halves, GQA, RMSNorm), ResNet (convolutions, symbolic batch).
ARCHITECTURES = {"bert": [(1, 32), (2, 17), (1, 5), (3, 64)], "gpt2": [(1, 32), (2, 17), (1, 5)],
                 "llama": [(1, 32), (2, 17), (1, 5)], "resnet": [(1,), (3,)]}


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_one_build_serves_every_size_of_a_real_architecture(arch, tmp_path):
    path = export_dynamic(arch, "tiny", tmp_path)
    reference = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    sizes = ARCHITECTURES[arch]
    session = dcopt.compile(path, dynamic=True, dims=dict(zip(("batch", "seq"), sizes[0])), cache_dir=tmp_path)
    assert session.manifest["dynamic"] and not session.manifest["not_native"]
    key = session.build_key
    for at in sizes:
        feeds = feeds_at(at, reference.get_inputs())
        got, want = session.run(None, feeds)[0], reference.run(None, feeds)[0]
        scale = max(1.0, float(np.abs(want).max()))
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * scale, err_msg=f"{arch} at {at}")
        assert session.build_key == key, f"{arch} compiled again for {at}"
