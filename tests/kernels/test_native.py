"""Machine code inside store entries: numba's cache directed into the entry, LLVM object files."""

import ctypes

import numpy as np
import pytest

from dcopt.kernels import KernelEntry
from dcopt.kernels.native import (CacheMissError, NotCachableError, compile_numba_module, emit_llvm_object,
                                  load_llvm_object, load_numba_module)
from tests.kernels.conftest import make_key
from tests.kernels.worker import SIGNATURES, SOURCE


def _numba(store, key):
    return store.get_or_build(key, lambda d: compile_numba_module(d, SOURCE, SIGNATURES, digest=key.digest),
                              load=load_numba_module)


def test_numba_entry_holds_machine_code_and_runs(store):
    key = make_key("numba-bias-relu")
    fetched = _numba(store, key)
    files = set(fetched.entry.meta["files"])
    assert "source.py" in files and any(f.startswith("numba_cache/") and f.endswith(".nbc") for f in files)
    assert fetched.entry.build_info["signatures"] == SIGNATURES
    x = np.array([[-1.0, 0.5]], np.float32)
    out = np.empty_like(x)
    fetched.value.bias_relu(x, np.array([0.25, 0.25], np.float32), out)
    np.testing.assert_allclose(out, [[0.0, 0.75]])
    assert not _numba(store, key).built  # in-process reload also comes from the entry
    kernel = fetched.value.bias_relu
    assert len(kernel.signatures) == 1  # the C-contiguous call converted to the stored "A" signature
    with pytest.raises(TypeError):
        kernel(x.astype(np.float64), np.zeros(2), np.empty((1, 2)))  # not stored: no silent compile


def test_corrupted_numba_object_is_rebuilt(store, caplog):
    key = make_key("numba-corrupt")
    entry = _numba(store, key).entry
    nbc = next(entry.path.glob("numba_cache/*.nbc"))
    nbc.write_bytes(nbc.read_bytes()[: nbc.stat().st_size // 2])
    again = _numba(store, key)
    assert again.built and "damaged" in caplog.text


def test_loader_refuses_to_compile(store):
    """A load that would need a compile fails (the store then rebuilds) and writes nothing into
    the verified entry; garbage in numba's files fails the load too."""
    key = make_key("numba-missing")
    entry = _numba(store, key).entry
    other_sig = {"kind": "numba", "signatures": {"bias_relu": ["void(float64[:, :], float64[:], float64[:, :])"]}}
    with pytest.raises(CacheMissError, match="bias_relu"):
        load_numba_module(KernelEntry(entry.path, {**entry.meta, "build_info": other_sig}))
    assert store.verify(entry.key) is None and len(list(entry.path.glob("numba_cache/*"))) == 2
    for f in entry.path.glob("numba_cache/*"):
        f.write_bytes(b"")
    with pytest.raises(Exception):
        load_numba_module(entry)


@pytest.mark.filterwarnings("ignore:Cannot cache compiled function")
def test_ctypes_pointer_kernel_is_refused(tmp_path, store):
    src = ("import ctypes, numba\n"
           "labs = ctypes.CDLL(None).labs\nlabs.restype = ctypes.c_long\nlabs.argtypes = [ctypes.c_long]\n"
           "@numba.njit\ndef kernel(x):\n    return labs(x)\n")
    key = make_key("ctypes")
    with pytest.raises(NotCachableError, match="kernel"):
        store.get_or_build(key, lambda d: compile_numba_module(d, src, {"kernel": ["int64(int64)"]}, digest=key.digest))
    assert store.get(key) is None


def test_llvm_object_round_trip(store):
    ir = "define double @dcopt_twice(double %x) {\n  %r = fmul double %x, 2.0\n  ret double %r\n}\n"
    fetched = store.get_or_build(make_key("llvm"), lambda d: emit_llvm_object(d, ir), load=load_llvm_object)
    assert fetched.entry.meta["source"] == "source.ll"
    again = store.get_or_build(make_key("llvm"), lambda d: pytest.fail("rebuilt"), load=load_llvm_object)
    twice = ctypes.CFUNCTYPE(ctypes.c_double, ctypes.c_double)(again.value.get_function_address("dcopt_twice"))
    assert twice(21.0) == 42.0
