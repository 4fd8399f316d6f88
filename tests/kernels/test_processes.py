"""Several processes and one store: same key at once -> one build, the others wait and load;
numba machine code written by one process is loaded, not recompiled, by the next."""

import json
import subprocess
import sys
from pathlib import Path

WORKER = Path(__file__).with_name("worker.py")


def run_workers(mode, store, barrier, n):
    procs = [subprocess.Popen([sys.executable, str(WORKER), mode, str(store), str(barrier), str(n)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(n)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def test_racing_processes_build_once(tmp_path):
    results = run_workers("fake", tmp_path / "store", tmp_path / "barrier", 3)
    builders = [r for r in results if r["built"]]
    assert len(builders) == 1
    # everyone got the builder's kernel; the waiters waited for it rather than building their own
    assert {r["value"] for r in results} == {f"# built by {builders[0]['pid']}\n"}
    assert all(r["seconds"] > 0.3 for r in results)


def test_numba_kernel_compiled_once_and_loaded_warm_elsewhere(tmp_path):
    store, barrier = tmp_path / "store", tmp_path / "barrier"
    racing = run_workers("numba", store, barrier, 2)
    assert sorted(r["built"] for r in racing) == [False, True]
    assert all(r["check"] for r in racing)
    # a later process: a cache load (load_numba_module raises if numba had to compile)
    warm = run_workers("numba", store, tmp_path / "barrier2", 1)[0]
    assert not warm["built"] and warm["check"]
    cold = next(r for r in racing if r["built"])
    assert warm["seconds"] < cold["seconds"] / 5, (cold, warm)
    entries = [p for p in (store).glob("??/*") if p.is_dir()]
    assert len(entries) == 1 and any((entries[0] / "numba_cache").glob("*.nbc"))
