"""Fixtures for the kernel store tests: a store in a temp dir and a cheap fake kernel build."""

from __future__ import annotations

import json
import os
import time

import pytest

from dcopt.kernels import KernelKey, KernelStore


def make_key(ir="ir-v1", **overrides) -> KernelKey:
    """A key with fixed target features and toolchain, so tests do not depend on the machine."""
    args = dict(codegen_version="cg-1", options={"fastmath": True},
                target_features={"cpu": "testcpu", "features": "+avx2,+fma"},
                toolchain={"python": "3.x", "numba": "0.1", "llvmlite": "0.1", "numpy": "2.0"})
    args.update(overrides)
    return KernelKey.make(ir, **args)


class FakeBuild:
    """A build callback that writes a source and an 'object file' and counts its calls."""

    def __init__(self, text="def kernel(x):\n    return x + 1\n"):
        self.text = text
        self.calls = 0

    def __call__(self, staging):
        self.calls += 1
        (staging / "source.py").write_text(self.text)
        (staging / "kernel.o").write_bytes(bytes(range(256)) * 4)
        return {"kind": "fake"}


def load_source(entry):
    return entry.source()


@pytest.fixture
def store(tmp_path):
    return KernelStore(tmp_path / "store")


def age_entry(entry, days):
    """Make an entry look created and last used ``days`` ago (meta.json holds no hash of itself,
    so editing it in place keeps the entry intact)."""
    old = time.time() - days * 86400
    meta_path = entry.path / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["created_ts"] = old
    meta_path.write_text(json.dumps(meta))
    os.utime(meta_path, (old, old))
