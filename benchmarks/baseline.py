"""Old dcopt beside new dcopt in one run: a baseline commit as one more runtime.

``python -m benchmarks.run --baseline REF`` (a git ref of this repository, or a directory holding
another dcopt source tree) adds the runtime ``dcopt@REF``. It runs in its own process
(:mod:`benchmarks.remote_worker`) with ``PYTHONPATH`` pointing at that tree, and is interleaved
with the other runtimes like any of them; its calls are timed inside its own process, so the
pipe between the two never enters a measurement. A git ref is checked out into a temporary
worktree (``git worktree add --detach``) that is removed afterwards. The table then shows the
new dcopt's speedup over the old one per model -- what a change to generated code must report.
"""

from __future__ import annotations

import os
import pickle
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.models import BenchModel
from benchmarks.runners import Prepared

REPO = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "remote_worker.py"


class BaselineTree:
    """A directory with another dcopt's sources: a given path, or a temporary git worktree."""

    def __init__(self, ref: str):
        self.ref = ref
        self._worktree = None
        candidate = Path(ref)
        if (candidate / "dcopt" / "__init__.py").is_file():
            self.path = candidate.resolve()
            return
        tmp = Path(tempfile.mkdtemp(prefix="dcopt-baseline-"))
        self._worktree = tmp / "tree"
        result = subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(self._worktree), ref],
                                capture_output=True, text=True)
        if result.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ValueError(f"--baseline {ref!r} is neither a dcopt source tree nor a git ref here: "
                             f"{result.stderr.strip()}")
        self.path = self._worktree

    def close(self) -> None:
        if self._worktree is not None:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(self._worktree)],
                           capture_output=True)
            shutil.rmtree(self._worktree.parent, ignore_errors=True)
            self._worktree = None


class _Worker:
    def __init__(self, tree: Path):
        env = {**os.environ, "PYTHONPATH": str(tree)}
        self.proc = subprocess.Popen([sys.executable, str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=env)

    def ask(self, *request):
        data = pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)
        self.proc.stdin.write(struct.pack("<Q", len(data)) + data)
        self.proc.stdin.flush()
        header = self.proc.stdout.read(8)
        if len(header) < 8:
            raise RuntimeError(f"baseline worker exited (code {self.proc.poll()})")
        status, value = pickle.loads(self.proc.stdout.read(struct.unpack("<Q", header)[0]))
        if status != "ok":
            raise RuntimeError(f"baseline dcopt: {value}")
        return value

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


class RemoteCall:
    """A call that is timed where it runs: the harness asks for lead-ins and bursts."""

    def __init__(self, worker: _Worker):
        self.worker = worker

    def __call__(self) -> list[np.ndarray]:
        return self.worker.ask("call")

    def lead_in(self, seconds: float) -> None:
        self.worker.ask("lead_in", seconds)

    def timed_burst(self, n: int) -> list[float]:
        return self.worker.ask("burst", n)


def baseline_preparer(tree: BaselineTree):
    """A ``PREPARERS`` entry for the baseline tree's dcopt."""
    workers: list[_Worker] = []

    def prepare(model: BenchModel, threads: int) -> Prepared:
        while workers:  # one model at a time: the previous model's worker is done
            workers.pop().close()
        worker = _Worker(tree.path)
        workers.append(worker)
        info = worker.ask("prepare", str(model.path), dict(model.feeds), threads)
        call = RemoteCall(worker)
        return Prepared(f"dcopt@{tree.ref}", f"{info['backend']} (baseline, own process)", call,
                        {"steps": info["steps"], "tree": str(tree.path)})

    prepare.close = lambda: [w.close() for w in workers]
    return prepare
