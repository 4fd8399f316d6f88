"""The PyTorch paths of the architecture sweep on a handful of real transformers architectures:
torch.compile(backend="dcopt") and torch.export -> dcopt, every graph through dcopt, outputs
within fp32 tolerance of eager (tiny configs, seeded weights and inputs)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from benchmarks import sweep, torch_paths  # noqa: E402

#: Llama (rotary Slices/Casts, RMSNorm), PoolFormer (GroupNorm), MobileNet-v2 (explicit Pad +
#: depthwise convs), BEiT (slice_scatter, get_attr constants), wav2vec2's cousin data2vec-text.
ARCHITECTURES = ["llama", "poolformer", "mobilenet_v2", "beit"]


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_architecture_runs_through_dcopt_on_both_torch_paths(arch):
    module, example = sweep.build_module(arch, sweep.ARCHITECTURES[arch])
    results = torch_paths.check_paths(module, example, reps=2, time_budget_s=0.5)
    for path, entry in results.items():
        assert entry["status"] == "ok", f"{arch} via {path}: {entry['status']}"
        assert entry["correctness"]["tol_ratio"] <= 1.0
        assert entry["median_ms"] > 0 and entry["eager_median_ms"] > 0
