"""benchmarks.torch_compare: the table it prints (the timing itself is benchmarks.measure's, tested there)."""

from __future__ import annotations

from benchmarks import torch_compare


def test_table_lists_medians_spread_ratios_and_untimed_runtimes():
    results = {
        "dcopt-onnx": {"median_ms": 4.0, "p10_ms": 3.9, "p90_ms": 4.2, "reps": 60, "status": "ok",
                       "vs_inductor": 0.8, "vs_eager": 0.5},
        "inductor": {"median_ms": 5.0, "p10_ms": 4.8, "p90_ms": 5.5, "reps": 60, "status": "ok",
                     "vs_dcopt-onnx": 1.25, "vs_eager": 0.625},
        "eager": {"median_ms": 8.0, "p10_ms": 7.5, "p90_ms": 9.0, "reps": 60, "status": "ok",
                  "vs_dcopt-onnx": 2.0, "vs_inductor": 1.6},
        "onnxruntime": {"status": "error: ImportError: no onnxruntime"},
    }
    lines = torch_compare.format_table("bert", results).splitlines()
    assert lines[0].split()[:3] == ["bert", "runtime", "median"]
    inductor = next(line for line in lines if " inductor " in line).split()
    assert inductor[2:4] == ["5.000", "4.80-5.50"] and inductor[5] == "1.250"
    assert "error: ImportError" in lines[-1] and "-" in lines[-1].split()


def test_inductor_is_built_last():
    """Building the dcopt torch.compile path resets Dynamo, which would drop inductor's code."""
    assert torch_compare.RUNTIMES[-1] == "inductor"
    assert set(torch_compare.RUNTIMES) == {"eager", "inductor", "torch.compile", "torch.export", "dcopt-onnx",
                                           "onnxruntime"}
