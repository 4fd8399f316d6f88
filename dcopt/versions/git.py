"""Git integration: the clean/smudge filter process, the diff drivers, the merge driver, setup.

``dcopt git install`` writes to ``.git/config``::

    [filter "dcopt"]   process = <python> -m dcopt git filter-process   (clean/smudge: one-shot forms)
                       required = true        # a failed smudge stops git, never a wrong file
    [diff "dcopt"]     textconv = <python> -m dcopt git textconv         (git log -p, git show)
                       command = <python> -m dcopt git diff-driver       (git diff: per-parameter stats)
    [merge "dcopt"]    driver = <python> -m dcopt git merge-driver %O %A %B %P

and ``dcopt git track "*.onnx"`` adds ``*.onnx filter=dcopt diff=dcopt merge=dcopt -text`` to
``.gitattributes``. Cleaning stores the parameters in the repository's object store and gives git
the manifest (:mod:`dcopt.versions.manifest`), delta-encoded against the version in the index
(else ``HEAD``); smudging rebuilds the file byte for byte. ``git config dcopt.tolerance T`` allows
lossy low-rank updates within T; ``git config dcopt.mergeStrategy S`` makes the merge driver
merge parameters both branches changed (else they are conflicts).
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

from dcopt.errors import DcoptError, ModelLoadError
from dcopt.versions import manifest as manifests
from dcopt.outputs import write_file
from dcopt.versions.store import ObjectStore

ATTRIBUTES = "filter=dcopt diff=dcopt merge=dcopt -text"


class GitError(DcoptError):
    """A git command dcopt ran failed, or the directory is not a git repository."""


def git(*args: str, cwd=None, check: bool = True, binary: bool = False):
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True)
    if check and proc.returncode != 0:
        raise GitError(f"git {' '.join(args)} failed: {proc.stderr.decode(errors='replace').strip()}")
    if not check and proc.returncode != 0:
        return None
    return proc.stdout if binary else proc.stdout.decode().strip()


def common_dir(cwd=None) -> Path:
    out = git("rev-parse", "--git-common-dir", cwd=cwd, check=False)
    if out is None:
        raise GitError(f"not inside a git repository: {Path(cwd or '.').resolve()}")
    return (Path(cwd or ".") / out).resolve()


def repo_store(cwd=None) -> ObjectStore:
    """The repository's object store: ``git config dcopt.store``, else ``<git dir>/dcopt/objects``."""
    configured = git("config", "--get", "dcopt.store", cwd=cwd, check=False)
    if configured:
        top = git("rev-parse", "--show-toplevel", cwd=cwd, check=False) or "."
        return ObjectStore(Path(top) / Path(configured).expanduser())
    return ObjectStore(common_dir(cwd) / "dcopt" / "objects")


def _config_float(key: str, cwd=None) -> float:
    value = git("config", "--get", key, cwd=cwd, check=False)
    try:
        return float(value) if value else 0.0
    except ValueError:
        raise GitError(f"git config {key} = {value!r} is not a number") from None


def command_prefix() -> str:
    """How git should run dcopt: this interpreter, so the filters work inside a virtualenv."""
    return f"{shlex.quote(sys.executable)} -m dcopt"


def install(cwd=None, prefix: str | None = None) -> list[tuple[str, str]]:
    """Write the filter and drivers into the repository's ``.git/config``; returns what was set."""
    common_dir(cwd)  # a clear error outside a repository
    cmd = prefix or command_prefix()
    settings = [("filter.dcopt.process", f"{cmd} git filter-process"),
                ("filter.dcopt.clean", f"{cmd} git clean %f"),
                ("filter.dcopt.smudge", f"{cmd} git smudge %f"),
                ("filter.dcopt.required", "true"),
                ("diff.dcopt.textconv", f"{cmd} git textconv"),
                ("diff.dcopt.command", f"{cmd} git diff-driver"),
                ("merge.dcopt.name", "dcopt model merge (per parameter)"),
                ("merge.dcopt.driver", f"{cmd} git merge-driver %O %A %B %P")]
    for key, value in settings:
        git("config", "--local", key, value, cwd=cwd)
    return settings


def track(pattern: str, cwd=None) -> tuple[Path, bool]:
    """Add ``pattern`` to the worktree's ``.gitattributes``; (file, whether a line was added)."""
    top = git("rev-parse", "--show-toplevel", cwd=cwd, check=False)
    if not top:
        raise GitError(f"not inside a git work tree: {Path(cwd or '.').resolve()}")
    if not pattern.strip() or any(c.isspace() for c in pattern):
        raise GitError(f"pattern {pattern!r} must be one non-empty gitattributes pattern without spaces")
    path = Path(top) / ".gitattributes"
    text = path.read_text() if path.exists() else ""
    line = f"{pattern} {ATTRIBUTES}"
    if any(existing.split()[:1] == [pattern] and "filter=dcopt" in existing for existing in text.splitlines()):
        return path, False
    write_file(path, (text + ("" if not text or text.endswith("\n") else "\n") + line + "\n").encode())
    return path, True


# -- clean / smudge ----------------------------------------------------------------------------

def _previous(path: str, cwd=None) -> dict | None:
    """The manifest git has for ``path``: the staged one, else HEAD's (the base of deltas)."""
    for spec in (f":{path}", f"HEAD:{path}"):
        data = git("cat-file", "blob", spec, cwd=cwd, check=False, binary=True)
        if data and manifests.is_manifest(data):
            try:
                return manifests.parse(data, spec)
            except ModelLoadError:
                return None
    return None


def clean(data: bytes, path: str, cwd=None) -> bytes:
    """A model's bytes -> its manifest (parameters into the store). Not a model: unchanged."""
    from dcopt.versions.formats import sniff
    from dcopt.versions.params import ModelFile

    if manifests.is_manifest(data) or not data:
        return data
    try:
        fmt = sniff(data, path)
    except ModelLoadError:
        print(f"dcopt: {path} is not a model file dcopt knows; stored as is", file=sys.stderr)
        return data
    model = ModelFile(data, path, Path(cwd or ".") / path, fmt)
    manifest = manifests.build(model, repo_store(cwd), _previous(path, cwd), _config_float("dcopt.tolerance", cwd))
    return manifests.dumps(manifest)


def smudge(data: bytes, path: str, cwd=None) -> bytes:
    """A manifest -> the model's bytes, verified; anything else unchanged."""
    if not manifests.is_manifest(data):
        return data
    return manifests.rebuild(manifests.parse(data, path), repo_store(cwd), path)


# -- the long-running filter process (gitprotocol-common pkt-lines) ----------------------------

_MAX_PKT = 65516


class _Pkt:
    def __init__(self, inp, out):
        self.inp, self.out = inp, out

    def read(self) -> bytes | None:
        """One packet's payload; None for a flush packet; EOFError at the end."""
        head = self.inp.read(4)
        if len(head) < 4:
            raise EOFError
        size = int(head, 16)
        if size == 0:
            return None
        payload = self.inp.read(size - 4)
        if len(payload) != size - 4:
            raise EOFError
        return payload

    def read_text_list(self) -> list[str]:
        out = []
        while (pkt := self.read()) is not None:
            out.append(pkt.decode().rstrip("\n"))
        return out

    def read_content(self) -> bytes:
        chunks = []
        while (pkt := self.read()) is not None:
            chunks.append(pkt)
        return b"".join(chunks)

    def write(self, payload: bytes) -> None:
        self.out.write(b"%04x" % (len(payload) + 4) + payload)

    def text(self, *lines: str) -> None:
        for line in lines:
            self.write(line.encode() + b"\n")
        self.flush()

    def flush(self) -> None:
        self.out.write(b"0000")
        self.out.flush()

    def content(self, data: bytes) -> None:
        for i in range(0, len(data), _MAX_PKT):
            self.write(data[i:i + _MAX_PKT])
        self.flush()


def filter_process(inp=None, out=None, cwd=None) -> int:
    """Serve git's filter protocol version 2 (clean and smudge) until git closes the pipe."""
    pkt = _Pkt(inp or sys.stdin.buffer, out or sys.stdout.buffer)
    hello = pkt.read_text_list()
    if "git-filter-client" not in hello or "version=2" not in hello:
        print(f"dcopt: unexpected filter handshake {hello}", file=sys.stderr)
        return 1
    pkt.text("git-filter-server", "version=2")
    capabilities = pkt.read_text_list()
    pkt.text(*[c for c in ("capability=clean", "capability=smudge") if c in capabilities])
    while True:
        try:
            headers = dict(line.split("=", 1) for line in pkt.read_text_list() if "=" in line)
            data = pkt.read_content()
        except EOFError:
            return 0
        command, path = headers.get("command"), headers.get("pathname", "")
        try:
            result = clean(data, path, cwd) if command == "clean" else smudge(data, path, cwd) \
                if command == "smudge" else None
            if result is None:
                raise GitError(f"unknown filter command {command!r}")
        except DcoptError as exc:
            print(f"dcopt {command} {path}: {exc}", file=sys.stderr)
            pkt.text("status=error")
            continue
        except Exception as exc:  # noqa: BLE001 - a bug must fail the file, not hang git
            print(f"dcopt {command} {path}: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
            pkt.text("status=error")
            continue
        pkt.text("status=success")
        pkt.content(result)
        pkt.flush()  # the status list after the content: empty, "success" stands


# -- diff and merge drivers --------------------------------------------------------------------

def load_version(data: bytes, file: str, path=None, cwd=None):
    """A ModelFile from a model's bytes or from a manifest (rebuilt from the store)."""
    from dcopt.versions.params import ModelFile

    if manifests.is_manifest(data):
        data = manifests.rebuild(manifests.parse(data, file), repo_store(cwd), file)
    return ModelFile(data, file, path)


def textconv(data: bytes, file: str) -> str:
    """A readable listing for git's line diff (``git log -p``): structure lines, then one line per
    parameter with its digest and update type."""
    from dcopt.versions import updates
    from dcopt.versions.params import ModelFile
    from dcopt.versions.store import sha256

    if manifests.is_manifest(data):
        m = manifests.parse(data, file)
        lines = [f"dcopt model ({m['format']}, {m['size']} bytes, sha256 {m['sha256'][:16]})"]
        if m.get("lossy"):
            lines.append(f"lossy within tolerance {m['lossy']['tolerance']:g}")
        lines += m["structure"]
        lines += [f"param {p['name']}: {p['dtype']}{p['shape']} sha256:{p['update']['sha256'][:16]} "
                  f"{updates.summary(p['update'])}" for p in m["params"]]
        return "\n".join(lines) + "\n"
    model = ModelFile(data, file)
    lines = [f"dcopt model ({model.format.name}, {len(data)} bytes, sha256 {sha256(data)[:16]})"]
    lines += model.structure.lines()
    lines += [f"param {p.name}: {p.dtype}{list(p.shape)} sha256:{sha256(model.blob(p))[:16]}" for p in model.payloads]
    return "\n".join(lines) + "\n"


def _committed(hex_id: str, cwd=None) -> bytes | None:
    """The manifest git stores as blob ``hex_id`` (the external diff's old-hex/new-hex), if any."""
    if not hex_id or set(hex_id) <= {"0", "."}:
        return None
    data = git("cat-file", "blob", hex_id, cwd=cwd, check=False, binary=True)
    return data if data and manifests.is_manifest(data) else None


def diff_driver(path: str, old_file: str, new_file: str, old_hex: str = "", new_hex: str = "", cwd=None) -> str:
    """What ``git diff`` prints for a tracked model: ``dcopt diff`` of the two versions, with how
    the store keeps each changed parameter when the new side is committed."""
    from dcopt.versions import updates
    from dcopt.versions.diff import diff_models

    old = Path(old_file).read_bytes() if old_file != "/dev/null" else b""
    new = Path(new_file).read_bytes() if new_file != "/dev/null" else b""
    header = f"diff --dcopt a/{path} b/{path}\n"
    if not old or not new:
        side = "new" if not old else "deleted"
        return header + f"{side} model\n" + textconv(new or old, path)
    a, b = load_version(old, f"a/{path}", cwd=cwd), load_version(new, f"b/{path}", cwd=cwd)
    if a.data == b.data:
        return ""
    committed = _committed(new_hex, cwd) or (new if manifests.is_manifest(new) else None)
    stored = {p["name"]: updates.summary(p["update"]) for p in manifests.parse(committed, path)["params"]} \
        if committed else None
    return header + "\n".join(diff_models(a, b, updates=stored).lines()) + "\n"


def merge_driver(base_file: str, ours_file: str, theirs_file: str, path: str, strategy: str | None = None,
                 cwd=None) -> str:
    """Merge three manifests (git's %O %A %B) into ``ours_file``; MergeConflict leaves it untouched."""
    from dcopt.versions.merge import merge_models
    from dcopt.versions.params import ModelFile

    if strategy is None:
        strategy = git("config", "--get", "dcopt.mergeStrategy", cwd=cwd, check=False) or None
    texts = [Path(f).read_bytes() for f in (base_file, ours_file, theirs_file)]
    base, ours, theirs = (load_version(t, f"{side} version of {path}", cwd=cwd)
                          for t, side in zip(texts, ("base", "our", "their")))
    result = merge_models(base, ours, theirs, strategy)
    previous = manifests.parse(texts[1], path) if manifests.is_manifest(texts[1]) else None
    merged = ModelFile(result.data, path)
    manifest = manifests.build(merged, repo_store(cwd), previous, _config_float("dcopt.tolerance", cwd))
    write_file(ours_file, manifests.dumps(manifest))
    return f"dcopt merge {path}: " + "; ".join(result.lines())


# -- carrying the store between repositories ---------------------------------------------------

def remote_store(remote: str, cwd=None) -> ObjectStore:
    """The store of another repository on this file system: a remote name or a path, bare or not."""
    url = git("remote", "get-url", remote, cwd=cwd, check=False) or remote
    url = url.removeprefix("file://")
    root = Path(cwd or ".") / url
    if not root.is_dir():
        raise GitError(f"'{remote}' is not a remote or repository directory on this machine (url {url}); "
                       "copy .git/dcopt/objects with rsync for other transports")
    target = common_dir(root)
    return ObjectStore(target / "dcopt" / "objects")


def copy_objects(source: ObjectStore, target: ObjectStore, names) -> int:
    """Copy the objects ``names`` that ``target`` lacks (verified on the way); returns how many."""
    copied = 0
    for name in names:
        if not target.has(name):
            target.put(source.get(name, f"object {name[:12]}"))
            copied += 1
    return copied


def reachable_objects(cwd=None, revs: tuple[str, ...] = ("--all",)) -> list[str]:
    """Every store object named by a manifest in the history of ``revs``."""
    out: dict[str, None] = {}
    listing = git("rev-list", "--objects", *revs, cwd=cwd)
    blobs = [line.split(" ", 1)[0] for line in listing.splitlines() if " " in line]
    if not blobs:
        return []
    proc = subprocess.run(["git", "cat-file", "--batch"], cwd=cwd, input="\n".join(blobs).encode() + b"\n",
                          capture_output=True, check=True)
    data, pos = proc.stdout, 0
    while pos < len(data):
        end = data.index(b"\n", pos)
        header = data[pos:end].split()
        size = int(header[2])
        body = data[end + 1:end + 1 + size]
        pos = end + 1 + size + 1
        if header[1] == b"blob" and manifests.is_manifest(body):
            for name in manifests.objects(manifests.parse(body)):
                out[name] = None
    return list(out)

