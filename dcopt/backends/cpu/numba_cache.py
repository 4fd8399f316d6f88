"""numba's on-disk cache for the backend's hand-written kernels, keyed by the backend's code too.

The kernels of :mod:`library` and the pool tasks of :mod:`tasks` that wrap them are compiled on
first use and cached by numba beside their module (``__pycache__``). numba keys such an entry by
the function's own bytecode and its own file's contents, but the machine code it stores includes
every callee compiled into it: after :mod:`library`'s depthwise routine gained its 5x5 path, the
depthwise pool task (whose file had not changed) kept loading the old routine's code from its
cache, in tests and benchmarks alike. :class:`VersionedCache` adds the backend's code version
(:func:`compiler.codegen_version`: a hash of every source under ``dcopt.backends.cpu``,
:mod:`mathlib` included) to the key, so any change to the backend compiles them afresh.
"""

from __future__ import annotations

from numba.core import caching


class VersionedCache(caching.FunctionCache):
    """numba's function cache, with the backend's code version in every index key."""

    def _index_key(self, sig, codegen):
        from dcopt.backends.cpu.compiler import codegen_version

        return (*super()._index_key(sig, codegen), codegen_version())


def cached(dispatcher):
    """Give an ``njit`` dispatcher (compiled lazily) the versioned cache: the ``cache=True``
    of these kernels."""
    dispatcher._cache = VersionedCache(dispatcher.py_func)
    return dispatcher


def cached_cfunc(pyfunc, signature, options):
    """``numba.cfunc(signature, cache=True, **options)(pyfunc)`` with the versioned cache."""
    from dcopt.kernels.native import cached_cfunc as compile_cfunc

    return compile_cfunc(pyfunc, signature, options, VersionedCache)
