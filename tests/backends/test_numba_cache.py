"""The backend's hand-written kernels are cached by numba keyed by the backend's code version
(dcopt/backends/cpu/numba_cache.py): a cached entry made under other backend sources is not
loaded (numba alone keys by the function's own file, so a changed callee kept its old code)."""

import importlib.util
import sys

from numba import njit

from dcopt.backends.cpu import compiler, numba_cache

SOURCE = """
def twice(x):
    return x * 2.0
"""


def _fresh_dispatcher(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return numba_cache.cached(njit(module.twice))


def test_a_cached_kernel_is_reloaded_only_under_the_same_backend_code(tmp_path, monkeypatch):
    path = tmp_path / "kernel_mod.py"
    path.write_text(SOURCE)
    first = _fresh_dispatcher(path, "kernel_mod")
    assert first(3.0) == 6.0
    assert sum(first.stats.cache_misses.values()) == 1  # compiled and saved
    again = _fresh_dispatcher(path, "kernel_mod")
    assert again(3.0) == 6.0
    assert sum(again.stats.cache_hits.values()) == 1  # the same code version: loaded
    monkeypatch.setattr(compiler, "codegen_version", lambda: "another backend")
    other = _fresh_dispatcher(path, "kernel_mod")
    assert other(3.0) == 6.0
    assert sum(other.stats.cache_hits.values()) == 0 and sum(other.stats.cache_misses.values()) == 1


def test_library_kernels_and_tasks_use_the_versioned_cache():
    from dcopt.backends.cpu import library, tasks

    assert isinstance(library.depthwise2d._cache, numba_cache.VersionedCache)
    assert isinstance(tasks.library_task("depthwise")._cache, numba_cache.VersionedCache)
