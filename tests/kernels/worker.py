"""A separate process asking the store for a kernel: ``python worker.py MODE STORE BARRIER N``.

MODE ``fake`` builds slowly (0.5 s) without numba; ``numba`` compiles a real @njit kernel with
its machine code cached in the entry. Waits until N workers are ready so that they really race,
then prints one JSON line: built, seconds spent in get_or_build, and a check of the result.
"""

import json
import os
import sys
import time
from pathlib import Path

from dcopt.kernels import KernelKey, KernelStore

SOURCE = '''
import numba

@numba.njit(fastmath=True)
def bias_relu(x, b, out):
    n, m = x.shape
    for i in range(n):
        for j in range(m):
            v = x[i, j] + b[j]
            out[i, j] = v if v > 0 else 0.0
'''
SIGNATURES = {"bias_relu": ["void(float32[:, :], float32[:], float32[:, :])"]}


def wait_for_peers(barrier: Path, n: int) -> None:
    barrier.mkdir(parents=True, exist_ok=True)
    (barrier / str(os.getpid())).touch()
    deadline = time.time() + 60
    while len(list(barrier.iterdir())) < n and time.time() < deadline:
        time.sleep(0.005)


def main(mode, store_dir, barrier, n):
    store = KernelStore(store_dir)
    key = KernelKey.make(SOURCE, codegen_version="test-worker", options={"mode": mode})
    if mode == "fake":
        def build(staging):
            time.sleep(0.5)
            (staging / "source.py").write_text(f"# built by {os.getpid()}\n")

        load = lambda entry: entry.source()  # noqa: E731
        check = None
    else:
        import numpy as np
        from numba.core.registry import cpu_target

        from dcopt.kernels.native import compile_numba_module, load_numba_module

        cpu_target.target_context.refresh()  # numba's one-off start-up, not part of either number

        def build(staging):
            return compile_numba_module(staging, SOURCE, SIGNATURES, digest=key.digest)

        load = load_numba_module
    wait_for_peers(Path(barrier), int(n))
    start = time.perf_counter()
    fetched = store.get_or_build(key, build, load=load, provenance={"model": "worker", "node": str(os.getpid())})
    seconds = time.perf_counter() - start
    if mode != "fake":
        x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
        b = np.full(4, 0.25, np.float32)
        out = np.empty_like(x)
        fetched.value.bias_relu(x, b, out)
        check = bool(np.allclose(out, np.maximum(x + b, 0)))
    print(json.dumps({"pid": os.getpid(), "built": fetched.built, "seconds": seconds, "check": check,
                      "value": fetched.value if mode == "fake" else None}))


if __name__ == "__main__":
    main(*sys.argv[1:])
