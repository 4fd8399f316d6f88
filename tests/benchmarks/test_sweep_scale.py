"""The sweep's weight rescaling: random-init models must produce activations of order one, or
accuracy checks pass vacuously and timings run on subnormals (transformers' init left
MobileNet-v2's output at ~6e-22)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from benchmarks.sweep import unit_scale  # noqa: E402


def test_every_layer_output_gets_unit_std_in_execution_order():
    torch.manual_seed(0)
    layers = [torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 3, groups=16, padding=1),
              torch.nn.ReLU(), torch.nn.Conv2d(16, 32, 1), torch.nn.Flatten(), torch.nn.Linear(32 * 8 * 8, 10)]
    for layer in layers:
        if hasattr(layer, "weight"):
            torch.nn.init.normal_(layer.weight, std=0.02)  # transformers' default: activations vanish
            torch.nn.init.zeros_(layer.bias)
    model = torch.nn.Sequential(*layers).eval()
    x = (torch.randn(1, 3, 8, 8),)
    with torch.no_grad():
        assert float(model(*x).std()) < 1e-3
    unit_scale(model, x)
    stds = []
    hooks = [m.register_forward_hook(lambda m, i, o: stds.append(float(o.std())))
             for m in model if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        model(*x)
    for h in hooks:
        h.remove()
    assert len(stds) == 4 and all(abs(s - 1.0) < 1e-3 for s in stds), stds
