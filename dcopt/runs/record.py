"""A run: one dcopt command (compile, bench, opt, patch) recorded as a directory plus an index row.

``<home>/runs/<id>/`` holds

* ``run.json``: what ran and what came out -- kind, exact argv, options, model path and sha256,
  dcopt version, toolchain, host (CPU model, SIMD flags, cores), build key and build summary,
  status with start/finish times, pid, metrics (scalars), and at the end every file's sha256;
* ``output.log``: what the command printed (stdout and stderr, teed);
* ``outputs/``: artifacts (the build manifest with its pass-by-pass report, pass or patch reports,
  the benchmark result with every latency sample, charts);
* ``annotations.json``: label and tags, the only thing that changes after the run finished.

Lifecycle: ``running`` (directory and index row written first, so a run is never missing from
``runs ls`` while it runs) -> ``completed`` | ``error`` | ``terminated`` (Ctrl-C or SIGTERM).
A process that died without finishing (SIGKILL, power loss) leaves ``running`` behind;
:func:`settle_stale` notices its pid is gone (or reused: the process start time is recorded
too) and marks it ``terminated``. A finished run's files are made read-only: runs are immutable.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import sys
import threading
import time
import uuid
from pathlib import Path

from dcopt.integrity import sha256_file
from dcopt.outputs import write_file
from dcopt.runs.home import dcopt_home, runs_dir
from dcopt.runs.index import RunIndex, RunRow

FORMAT, FORMAT_VERSION = "dcopt-run", 1
RUN_JSON, ANNOTATIONS, LOG, OUTPUTS = "run.json", "annotations.json", "output.log", "outputs"
FINISHED = ("completed", "error", "terminated")
#: Environment switch for scripts that must not record (the CLI also takes ``--no-record``).
NO_RECORD_ENV = "DCOPT_NO_RECORD"


def write_json(path: Path, data) -> None:
    """Write JSON atomically: a temporary sibling renamed into place."""
    write_file(path, json.dumps(data, indent=1, sort_keys=True, default=str))


def read_json(path: Path, default=None):
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        if default is not None:
            return default
        raise


def process_start(pid: int) -> str | None:
    """The kernel's start time of process ``pid`` (clock ticks since boot), or None: a pid and
    its start time name one process even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def is_alive(pid: int | None, pid_start: str | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    now = process_start(pid)
    return pid_start is None or now is None or now == pid_start


def content_hash(run_dir: Path) -> str:
    """What a remote compares to know a run is already there: run.json (which lists every
    file's sha256 once finished) and the annotations."""
    h = hashlib.sha256((Path(run_dir) / RUN_JSON).read_bytes())
    annotations = Path(run_dir) / ANNOTATIONS
    if annotations.is_file():
        h.update(b"\0" + annotations.read_bytes())
    return h.hexdigest()


def _jsonable(value):
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    return str(value)


def _toolchain() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    from dcopt.kernels.keys import toolchain_versions

    out = dict(toolchain_versions())
    for dist in ("dcopt", "onnx", "onnxruntime"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


class _Tee:
    """A text stream that also copies what is written to the run's log."""

    def __init__(self, stream, log):
        self._stream, self._log = stream, log

    def write(self, text):
        if isinstance(text, str):
            self._log.write(text)
        return self._stream.write(text)

    def flush(self):
        self._log.flush()
        self._stream.flush()

    def __getattr__(self, name):
        return getattr(self._stream, name)


class Run:
    """A run being recorded (what :func:`record_run` yields)."""

    recording = True

    def __init__(self, kind: str, argv: list[str], options: dict, home: Path | None = None, model=None,
                 label: str = ""):
        from dcopt.runs.host import host_info

        self.home = Path(home) if home is not None else dcopt_home()
        self.index = RunIndex(self.home)
        self.id = uuid.uuid4().hex
        self.path = runs_dir(self.home) / self.id
        self.record = {"format": FORMAT, "format_version": FORMAT_VERSION, "id": self.id, "kind": kind,
                       "argv": list(argv), "cwd": os.getcwd(), "options": _jsonable(options), "model": None,
                       "started": time.time(), "finished": None, "status": "running", "exit_code": None,
                       "error": None, "pid": os.getpid(), "pid_start": process_start(os.getpid()),
                       "host": host_info(), "toolchain": _toolchain(), "build": None, "metrics": {}}
        self.record["dcopt"] = self.record["toolchain"].get("dcopt")
        if model is not None:
            self.set_model(model)
        (self.path / OUTPUTS).mkdir(parents=True)
        write_json(self.path / ANNOTATIONS, {"label": label, "tags": []})
        write_json(self.path / RUN_JSON, self.record)
        self.index.put(RunRow.from_record(self.record, {"label": label}))

    # -- what commands log -----------------------------------------------------------------------
    def set_model(self, path) -> None:
        """The model this run worked on: its path, name and sha256 (remembered by stat signature
        in the compile cache, so a big model is not rehashed)."""
        path = Path(path)
        model = {"path": str(path.resolve()), "name": path.stem, "sha256": None}
        if path.is_file():
            from dcopt.backends.cpu.source import cache_root
            from dcopt.integrity import TrustCache

            model["sha256"] = TrustCache(cache_root()).digest(path)
        self.record["model"] = model

    def log_metrics(self, metrics: dict | None = None, **more) -> None:
        """Scalar results (``latency_ms``, ``compile_s``, ``speedup.onnxruntime`` ...)."""
        for name, value in {**(metrics or {}), **more}.items():
            if value is not None:
                self.record["metrics"][name] = value if isinstance(value, (int, float, str, bool)) else str(value)

    def log_params(self, **params) -> None:
        """Options the command resolved itself (the effective pipeline, runtimes ...)."""
        self.record["options"].update(_jsonable(params))

    def output_path(self, name: str) -> Path:
        """Where to write output ``name`` (under ``outputs/``)."""
        path = self.path / OUTPUTS / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def log_output(self, name: str, data) -> Path:
        """Write an artifact: a dict/list as JSON, str as text, bytes as they are."""
        path = self.output_path(name)
        if isinstance(data, (dict, list)):
            write_json(path, data)
        else:
            write_file(path, data if isinstance(data, bytes) else str(data))
        return path

    def log_build(self, manifest: dict, key: str | None = None, output=None) -> None:
        """A compile's build: its key, kernel keys, pipeline, patches and the full manifest (with
        the pass-by-pass summary) as ``outputs/build-manifest.json``."""
        steps = manifest.get("steps", {})
        self.record["build"] = {
            "key": key, "module_key": manifest.get("module_key"), "native_key": manifest.get("native_key"),
            "pipeline": manifest.get("pipeline"), "pipeline_applied": manifest.get("pipeline_applied"),
            "patches": manifest.get("patches", []), "bindings": manifest.get("bindings", {}),
            "kernels": sorted(k["name"] for k in manifest.get("kernels", [])), "steps": steps,
            "not_native": manifest.get("not_native", {}), "output": str(output) if output else None}
        self.log_params(pipeline=manifest.get("pipeline"), patches=manifest.get("patches", []))
        self.log_output("build-manifest.json", {k: v for k, v in manifest.items() if k != "files"})
        memory = manifest.get("memory", {})
        self.log_metrics({"compile_s": manifest.get("compile_seconds"), "steps": sum(steps.values()),
                          "generated_kernels": steps.get("kernel", 0), "arena_bytes": memory.get("arena_bytes"),
                          "weights_bytes": memory.get("weights_bytes")})

    # -- lifecycle -------------------------------------------------------------------------------
    def finish(self, status: str, *, exit_code: int | None = None, error: str | None = None) -> None:
        """Write the final record (with every file's sha256), make the files read-only, update the index."""
        self.record.update(status=status, exit_code=exit_code, error=error, finished=time.time())
        files = {}
        for p in sorted(self.path.rglob("*")):
            rel = p.relative_to(self.path).as_posix()
            if p.is_file() and rel not in (RUN_JSON, ANNOTATIONS) and not p.name.endswith(".tmp"):
                files[rel] = sha256_file(p)
        self.record["files"] = files
        write_json(self.path / RUN_JSON, self.record)
        for p in self.path.rglob("*"):
            if p.is_file():
                p.chmod(0o444)
        annotations = read_json(self.path / ANNOTATIONS, {})
        self.index.put(RunRow.from_record(self.record, annotations, content_hash(self.path)))


class NullRun:
    """What :func:`record_run` yields when recording is off: every method does nothing."""

    recording = False
    id = path = None

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


_ACTIVE: list = []


def current_run():
    """The run being recorded by this process (a :class:`NullRun` outside one)."""
    return _ACTIVE[-1] if _ACTIVE else NullRun()


def recording_disabled() -> bool:
    return os.environ.get(NO_RECORD_ENV, "").strip().lower() not in ("", "0", "false", "no")


@contextlib.contextmanager
def record_run(kind: str, argv: list[str] | None = None, options: dict | None = None, *, model=None,
               home: Path | None = None, record: bool = True, capture_output: bool = True, label: str = ""):
    """Record the body as run ``kind``; yields the :class:`Run` (or a :class:`NullRun` when
    ``record`` is false or ``$DCOPT_NO_RECORD`` is set). Exceptions pass through after the run
    is marked ``error``, ``terminated`` (KeyboardInterrupt, SIGTERM) or, for an exit with code 0,
    ``completed``."""
    if not record or recording_disabled():
        yield NullRun()
        return
    run = Run(kind, sys.argv if argv is None else argv, options or {}, home, model, label)
    stack = contextlib.ExitStack()
    reason = {"signal": None}
    if threading.current_thread() is threading.main_thread():
        def on_sigterm(signum, frame):
            reason["signal"] = "SIGTERM"
            raise KeyboardInterrupt("SIGTERM")

        previous = signal.signal(signal.SIGTERM, on_sigterm)
        stack.callback(signal.signal, signal.SIGTERM, previous)
    if capture_output:
        log = stack.enter_context(open(run.path / LOG, "a", buffering=1, encoding="utf-8", errors="replace"))
        out, err = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(out, log), _Tee(err, log)
        stack.callback(setattr, sys, "stderr", err)
        stack.callback(setattr, sys, "stdout", out)
    _ACTIVE.append(run)
    stack.callback(_ACTIVE.remove, run)
    with stack:
        try:
            yield run
        except KeyboardInterrupt:
            stack.close()
            run.finish("terminated", exit_code=130, error=f"interrupted ({reason['signal'] or 'Ctrl-C'})")
            raise
        except SystemExit as exc:  # click's ctx.exit raises click.exceptions.Exit, not this
            stack.close()
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            run.finish("completed" if code == 0 else "error", exit_code=code,
                       error=None if code == 0 else f"exit code {exc.code}")
            raise
        except BaseException as exc:
            stack.close()
            code = getattr(exc, "exit_code", None)  # click.exceptions.Exit
            if code == 0 and type(exc).__name__ == "Exit":
                run.finish("completed", exit_code=0)
            elif type(exc).__name__ == "Exit":
                run.finish("error", exit_code=code, error=f"exit code {code}")
            else:
                run.finish("error", exit_code=code if isinstance(code, int) else 1,
                           error=str(exc) if hasattr(exc, "location") else f"{type(exc).__name__}: {exc}")
            raise
    run.finish("completed", exit_code=0)


def settle_stale(index: RunIndex, rows: list[RunRow]) -> list[RunRow]:
    """Rows whose process died while ``running`` (on this host) become ``terminated``, on disk and
    in the index; the others are returned as they are."""
    import socket

    host = socket.gethostname()
    for row in rows:
        if row.status != "running" or (row.host and row.host != host) or is_alive(row.pid, row.pid_start):
            continue
        path = runs_dir(index.home) / row.id
        try:
            record = read_json(path / RUN_JSON)
        except (OSError, ValueError):
            record = None
        if record is not None and record.get("status") == "running":
            record.update(status="terminated", finished=time.time(), exit_code=None,
                          error=f"process {row.pid} ended without finishing the run (killed?)")
            with contextlib.suppress(OSError):
                write_json(path / RUN_JSON, record)
        row.status = "terminated"
        with contextlib.suppress(Exception):
            index.update(row.id, status="terminated", finished=time.time())
    return rows


def remove_run(home: Path, run_id: str) -> None:
    """Delete a run's directory (dcopt's own, under the home) and its index row."""
    path = runs_dir(home) / run_id
    if path.is_dir():
        trash = path.with_name(f".rm-{run_id}-{os.getpid()}")
        os.replace(path, trash)  # out of sight first: never half a run listed
        shutil.rmtree(trash, ignore_errors=True)
    RunIndex(home).remove([run_id])
