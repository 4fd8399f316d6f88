"""A dcopt from another source tree, served to the benchmark harness over stdin/stdout.

Run as ``PYTHONPATH=<other tree> python benchmarks/remote_worker.py``: this file imports only the
standard library and numpy itself, so ``import dcopt`` finds the *other* tree's package (a
baseline commit's checkout) while the harness that drives it is this one's. Requests and replies
are pickled tuples, length-prefixed:

* ``("prepare", model_path, feeds, threads)`` -> ``{"backend": ..., "outputs": [...], "steps": ...}``
* ``("lead_in", seconds)`` -> calls until ``seconds`` passed (untimed)
* ``("burst", n)`` -> ``[durations in s]``: n calls, each timed here with ``perf_counter``, so
  the pipe's round trip is never part of a measurement
* ``("call",)`` -> the outputs of one call
"""

from __future__ import annotations

import gc
import pickle
import struct
import sys
import time


def _read(stream):
    header = stream.read(8)
    if len(header) < 8:
        return None
    (size,) = struct.unpack("<Q", header)
    return pickle.loads(stream.read(size))


def _write(stream, value) -> None:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def main() -> int:
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # anything the model code prints must not corrupt the protocol
    session = feeds = None
    while True:
        request = _read(stdin)
        if request is None:
            return 0
        try:
            kind = request[0]
            if kind == "prepare":
                import dcopt

                _, path, feeds, threads = request
                session = dcopt.compile(str(path), threads=threads)
                outputs = session.run(None, feeds)
                reply = {"backend": f"dcopt from {dcopt.__file__.rsplit('/dcopt/', 1)[0]}", "outputs": outputs,
                         "steps": session.manifest.get("steps")}
            elif kind == "lead_in":
                start = time.perf_counter()
                session.run(None, feeds)
                while time.perf_counter() - start < request[1]:
                    session.run(None, feeds)
                reply = None
            elif kind == "burst":
                gc.disable()
                times = []
                for _ in range(request[1]):
                    t0 = time.perf_counter()
                    session.run(None, feeds)
                    times.append(time.perf_counter() - t0)
                gc.enable()
                reply = times
            elif kind == "call":
                reply = session.run(None, feeds)
            else:
                raise ValueError(f"unknown request {kind!r}")
            _write(stdout, ("ok", reply))
        except Exception as exc:  # noqa: BLE001 - reported to the harness, which drops this runtime
            _write(stdout, ("error", f"{type(exc).__name__}: {exc}"))


if __name__ == "__main__":
    sys.exit(main())
