"""LLVM's code pages leave the process before a compiled model's first run (resident.py)."""

from __future__ import annotations

import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import dcopt
from dcopt.backends.cpu.resident import toolchain_ranges

#: (range, permissions, path, private dirty kB) of each mapping in a synthetic /proc/self/smaps
MAPPINGS = [
    ("7f0000000000-7f0000100000", "r--p", "/venv/llvmlite/binding/libllvmlite.so", 0),
    ("7f0000100000-7f0000900000", "r-xp", "/venv/llvmlite/binding/libllvmlite.so", 0),
    ("7f0000900000-7f0000a00000", "r--p", "/venv/llvmlite/binding/libllvmlite.so", 1792),  # RELRO: relocated
    ("7f0000a00000-7f0000a10000", "rw-p", "/venv/llvmlite/binding/libllvmlite.so", 0),
    ("7f0000b00000-7f0000c00000", "r-xp", "/usr/lib/libpython3.11.so.1.0", 0),
    ("7f0000d00000-7f0000e00000", "r-xs", "/tmp/shared-llvmlite-thing", 0),
]
SMAPS = "".join(f"{span} {perms} 00000000 fd:01 42 {path}\nRss:                 400 kB\n"
                f"Private_Dirty:    {dirty:5d} kB\n" for span, perms, path, dirty in MAPPINGS)


def test_only_clean_unwritable_toolchain_mappings_are_released():
    # the relocated read-only segment (dirty), the writable data, other libraries and a shared
    # mapping all stay
    assert toolchain_ranges(SMAPS) == [(0x7f0000000000, 0x7f0000100000), (0x7f0000100000, 0x7f0000900000)]


def _llvm_resident_kb() -> int:
    total, counting = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and not head[0].endswith(":"):
                counting = len(head) > 5 and "libllvmlite" in head[5] and "w" not in head[1]
            elif counting and head[0] == "Rss:":
                total += int(head[1])
    return total


def _model(offset: float) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 40])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 40])
    c = helper.make_tensor("c", TensorProto.FLOAT, [40], np.full(40, offset, np.float32))
    nodes = [helper.make_node("Exp", ["x"], ["e"]), helper.make_node("Add", ["e", "c"], ["y"])]
    graph = helper.make_graph(nodes, "resident", [x], [y], [c])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
def test_compiled_model_runs_without_llvm_pages_and_a_later_compile_still_works(tmp_path):
    x = np.array([[0.0, 1.0, -np.inf, np.inf, np.nan, 88.0, -100.0, 3e-39] * 5] * 3, np.float32)
    for offset in (0.5, -2.0):  # the second compile runs LLVM again after its pages were released
        session = dcopt.compile(_model(offset), cache_dir=tmp_path)
        # what is left is only what the warm-up run itself touched (ctypes, the MCJIT lookups)
        assert _llvm_resident_kb() < 8 * 1024
        got = session.run(None, {"x": x})[0]
        np.testing.assert_allclose(got, np.exp(x) + np.float32(offset), rtol=1e-6, atol=0)
