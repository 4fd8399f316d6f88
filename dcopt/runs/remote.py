"""Sharing runs: ``dcopt runs push|pull REMOTE`` (and ``export``/``import``, which are push/pull to
a directory).

A remote holds ``<root>/runs/<id>/`` exactly as the local home does, plus ``.dcopt-sha`` in each
run: the run's content hash (:func:`~dcopt.runs.record.content_hash`), written *last*. So

* a run whose marker is present and equal is skipped (push and pull are idempotent);
* an interrupted transfer leaves a run without its marker; the next push sends only the files
  still missing or different (resumable) and then the marker;
* a pulled run is verified against the sha256 of every file its ``run.json`` lists before it is
  moved into the home and indexed: a damaged or tampered copy never becomes a run.

Remotes: a directory path; ``s3://bucket/prefix`` through boto3 (endpoint from
``$DCOPT_S3_ENDPOINT_URL`` or ``$AWS_ENDPOINT_URL``, credentials the usual AWS way);
``[user@]host:path`` through ``ssh`` (a tar stream per run). Only finished runs travel.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from dcopt.errors import InputError
from dcopt.runs.home import runs_dir
from dcopt.runs.index import RunIndex, RunRow
from dcopt.integrity import sha256_file
from dcopt.outputs import staged_file
from dcopt.runs.record import ANNOTATIONS, FINISHED, FORMAT, RUN_JSON, content_hash, read_json

MARKER = ".dcopt-sha"


def _files(run_dir: Path) -> list[str]:
    return sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*")
                  if p.is_file() and p.name != MARKER and not p.name.endswith(".tmp"))


def install_run(home: Path, staged: Path) -> str:
    """Verify a run directory copied from elsewhere and move it into ``home`` (replacing an older
    copy of the same run); returns its id."""
    try:
        record = read_json(staged / RUN_JSON)
    except (OSError, ValueError) as exc:
        raise InputError(f"not a dcopt run (run.json: {exc})", file=str(staged)) from None
    if record.get("format") != FORMAT or not re.fullmatch(r"[0-9a-f]{32}", str(record.get("id", ""))):
        raise InputError("not a dcopt run directory (run.json format/id)", file=str(staged))
    if record.get("status") not in FINISHED:
        raise InputError(f"run {record['id'][:8]} is still {record.get('status')}; only finished runs travel",
                         file=str(staged))
    for rel, digest in (record.get("files") or {}).items():
        path = staged / rel
        if not path.is_file() or sha256_file(path) != digest:
            raise InputError(f"run {record['id'][:8]}: file {rel} is missing or does not match its sha256",
                             file=str(staged))
    (staged / MARKER).unlink(missing_ok=True)
    for p in staged.rglob("*"):
        if p.is_file():
            p.chmod(0o444)  # immutable, as where it was recorded
    target = runs_dir(home) / record["id"]
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        old = target.with_name(f".replaced-{record['id']}-{os.getpid()}")
        os.replace(target, old)
        os.replace(staged, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staged, target)
    annotations = read_json(target / ANNOTATIONS, {})
    RunIndex(home).put(RunRow.from_record(record, annotations, content_hash(target)))
    return record["id"]


class DirRemote:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.name = str(root)

    def listing(self) -> dict[str, str]:
        base = self.root / "runs"
        if not base.is_dir():
            return {}
        return {p.parent.name: p.read_text().strip() for p in base.glob(f"*/{MARKER}")}

    def push(self, run_dir: Path, sha: str) -> None:
        target = self.root / "runs" / run_dir.name
        target.mkdir(parents=True, exist_ok=True)
        (target / MARKER).unlink(missing_ok=True)
        for rel in _files(run_dir):
            dst = target / rel
            if dst.is_file() and sha256_file(dst) == sha256_file(run_dir / rel):
                continue  # already there (an interrupted push resumes)
            dst.parent.mkdir(parents=True, exist_ok=True)
            with staged_file(dst) as tmp:
                shutil.copyfile(run_dir / rel, tmp)
        (target / MARKER).write_text(sha)

    def fetch(self, run_id: str, staged: Path) -> None:
        shutil.copytree(self.root / "runs" / run_id, staged)


class S3Remote:
    def __init__(self, bucket: str, prefix: str):
        try:
            import boto3
        except ImportError:
            raise InputError("s3:// remotes need boto3: pip install 'dcopt[runs]'") from None
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.name = f"s3://{bucket}/{self.prefix}"
        self.s3 = boto3.client("s3", endpoint_url=os.environ.get("DCOPT_S3_ENDPOINT_URL") or None)

    def _key(self, *parts) -> str:
        return "/".join([p for p in (self.prefix, "runs") if p] + list(parts))

    def _objects(self, prefix: str) -> dict[str, dict]:
        out = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                out[obj["Key"]] = obj
        return out

    def listing(self) -> dict[str, str]:
        from botocore.exceptions import ClientError

        try:
            keys = [k for k in self._objects(self._key("")) if k.endswith("/" + MARKER)]
        except ClientError as exc:
            raise InputError(f"{self.name}: {exc}") from None
        return {k.split("/")[-2]: self.s3.get_object(Bucket=self.bucket, Key=k)["Body"].read().decode().strip()
                for k in keys}

    def push(self, run_dir: Path, sha: str) -> None:
        marker = self._key(run_dir.name, MARKER)
        self.s3.delete_object(Bucket=self.bucket, Key=marker)
        present = self._objects(self._key(run_dir.name, ""))
        for rel in _files(run_dir):
            key = self._key(run_dir.name, rel)
            data = (run_dir / rel).read_bytes()
            if key in present and present[key]["ETag"].strip('"') == hashlib.md5(data).hexdigest():
                continue  # already uploaded (single-part objects: the ETag is the MD5)
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=data)
        self.s3.put_object(Bucket=self.bucket, Key=marker, Body=sha.encode())

    def fetch(self, run_id: str, staged: Path) -> None:
        prefix = self._key(run_id, "")
        for key in self._objects(prefix):
            path = staged / key[len(prefix):]
            path.parent.mkdir(parents=True, exist_ok=True)
            self.s3.download_file(self.bucket, key, str(path))


class SshRemote:
    """``[user@]host:path`` through ``ssh``: a run travels as a tar stream (``tar`` on the remote
    side, Python's tarfile here, extracted with the ``data`` filter: no links or paths out of the
    run directory); the marker is written by the same remote command, only after tar succeeded."""

    def __init__(self, host: str, path: str):
        if shutil.which("ssh") is None:
            raise InputError("ssh remotes need the ssh client installed")
        self.host, self.path = host, path.rstrip("/") or "."
        self.name = f"{host}:{self.path}"

    def _ssh(self, command: str, data: bytes | None = None) -> bytes:
        result = subprocess.run(["ssh", self.host, command], input=data, capture_output=True)
        if result.returncode != 0:
            raise InputError(f"{self.name}: ssh failed: {result.stderr.decode(errors='replace').strip()[:300]}")
        return result.stdout

    def _dir(self, *parts) -> str:
        import shlex

        return shlex.quote("/".join([self.path, "runs", *parts]))

    def listing(self) -> dict[str, str]:
        out = self._ssh(f"cd {self._dir()} 2>/dev/null && grep -H . */{MARKER}; true").decode()
        return {line.split("/")[0]: line.rsplit(":", 1)[1].strip() for line in out.splitlines() if ":" in line}

    def push(self, run_dir: Path, sha: str) -> None:
        import io
        import tarfile

        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for rel in _files(run_dir):
                tar.add(run_dir / rel, arcname=rel)
        target, marker = self._dir(run_dir.name), self._dir(run_dir.name, MARKER)
        self._ssh(f"mkdir -p {target} && rm -f {marker} && tar -C {target} -xf - && printf %s {sha} > {marker}",
                  buffer.getvalue())

    def fetch(self, run_id: str, staged: Path) -> None:
        import io
        import tarfile

        data = self._ssh(f"tar -C {self._dir(run_id)} -cf - .")
        staged.mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(staged, filter="data")
            else:  # Python before 3.10.12/3.11.4: plain files with relative paths only
                members = tar.getmembers()
                if any(not (m.isfile() or m.isdir()) or m.name.startswith("/") or ".." in m.name.split("/")
                       for m in members):
                    raise InputError(f"{self.name}: run {run_id[:8]} holds links or paths outside its directory")
                tar.extractall(staged, members)


def open_remote(spec: str):
    """A remote from its spec: ``s3://bucket/prefix``, ``[user@]host:path`` or a directory."""
    if spec.startswith("s3://"):
        bucket, _, prefix = spec[5:].partition("/")
        if not bucket:
            raise InputError(f"remote '{spec}': expected s3://BUCKET/PREFIX")
        return S3Remote(bucket, prefix)
    m = re.match(r"^([\w.@-]+):(.*)$", spec)
    if m and not Path(spec).exists() and "/" not in m.group(1):
        return SshRemote(m.group(1), m.group(2))
    return DirRemote(Path(spec))


def push(home: Path, rows: list[RunRow], remote, log=print) -> tuple[int, int]:
    """Send finished runs the remote lacks (or holds in another version); returns (sent, skipped)."""
    there = remote.listing()
    sent = skipped = 0
    for row in rows:
        if row.status not in FINISHED:
            log(f"skip {row.short_id}: still {row.status}")
            skipped += 1
            continue
        run_dir = runs_dir(home) / row.id
        sha = content_hash(run_dir)
        if there.get(row.id) == sha:
            skipped += 1
            continue
        remote.push(run_dir, sha)
        sent += 1
        log(f"pushed {row.short_id} {row.kind} {row.model}")
    return sent, skipped


def pull(home: Path, remote, wanted: set[str] | None = None, log=print) -> tuple[int, int]:
    """Fetch the remote's runs this home lacks (or holds in another version); returns (fetched, skipped)."""
    fetched = skipped = 0
    for run_id, sha in sorted(remote.listing().items()):
        if wanted is not None and not any(run_id.startswith(w) for w in wanted):
            continue
        local = runs_dir(home) / run_id
        if (local / RUN_JSON).is_file() and content_hash(local) == sha:
            skipped += 1
            continue
        runs_dir(home).mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".pull-{run_id[:8]}-", dir=runs_dir(home)))
        try:
            remote.fetch(run_id, staging / "run")
            install_run(home, staging / "run")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        fetched += 1
        log(f"pulled {run_id[:8]}")
    return fetched, skipped
