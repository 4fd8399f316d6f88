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

import os
import shlex
import subprocess
import sys
from pathlib import Path

from dcopt.errors import DcoptError, ModelLoadError
from dcopt.versions import index, manifest as manifests
from dcopt.outputs import write_file
from dcopt.versions.store import ObjectStore, sha256

ATTRIBUTES = "filter=dcopt diff=dcopt merge=dcopt -text"
#: every branch, tag and remote-tracking ref, not the store's own ref (its blobs are parameters)
HISTORY = ("--exclude=refs/dcopt/*", "--all")


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


def side_file_patterns(pattern: str, cwd=None) -> list[str]:
    """What tracking ``pattern`` also needs for ONNX external data (:mod:`dcopt.versions.external_data`):
    for a ``*.onnx``-style pattern the usual side-file names (``<pattern>.data``, ``<pattern>_data``),
    and the exact path (``/dir/file``) of every external data file that a matching model in the work
    tree names -- so a checkout rebuilds the pair and a fine-tune stores only changed tensors."""
    import fnmatch

    from dcopt.versions import external_data

    top = Path(git("rev-parse", "--show-toplevel", cwd=cwd, check=False) or cwd or ".").resolve()
    out = [f"{pattern}.data", f"{pattern}_data"] if pattern.endswith(".onnx") else []
    for directory, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if d != ".git"]
        for name in files:
            rel = os.path.relpath(os.path.join(directory, name), top).replace(os.sep, "/")
            if not fnmatch.fnmatch(rel if "/" in pattern.strip("/") else name, pattern.strip("/")):
                continue
            for side in external_data.side_files(Path(directory) / name):
                side_rel = "/" + os.path.relpath(side, top).replace(os.sep, "/")
                if not side_rel.startswith("/..") and side_rel not in out and not any(c.isspace() for c in side_rel):
                    out.append(side_rel)
    return out


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
    from dcopt.versions.params import ModelFile

    if manifests.is_manifest(data) or not data:
        return data
    previous = _previous(path, cwd)
    try:
        fmt = _format_of(data, path, cwd, previous)
    except ModelLoadError:
        print(f"dcopt: {path} is not a model file dcopt knows, nor the external data of an ONNX model next to "
              "it; stored as is", file=sys.stderr)
        return data
    model = ModelFile(data, path, Path(cwd or ".") / path, fmt)
    _warn_untracked_side_files(model, path, cwd)
    store = repo_store(cwd)
    manifest = manifests.build(model, store, previous, _config_float("dcopt.tolerance", cwd))
    return _remembered(store, manifest)


def _format_of(data: bytes, path: str, cwd=None, manifest: dict | None = None):
    """The format of a tracked file: from a manifest that cut it as external data, else sniffed,
    else the external data of ONNX models in the work tree; ModelLoadError if none."""
    from dcopt.versions import external_data
    from dcopt.versions.formats import sniff

    if manifest is not None and manifest.get("format") == external_data.NAME and \
            manifest.get("size") == len(data) and manifest.get("sha256") == sha256(data):
        return external_data.from_manifest(manifest)
    try:
        return sniff(data, path)
    except ModelLoadError:
        where = Path(cwd or ".").resolve() / path
        top = git("rev-parse", "--show-toplevel", cwd=where.parent, check=False) if where.parent.is_dir() else None
        fmt = external_data.format_for(data, where, Path(top).resolve() if top else where.parent, manifest)
        if fmt is None:
            raise
        return fmt


def _warn_untracked_side_files(model, path: str, cwd=None) -> None:
    """An ONNX model whose external data file git would store whole: say how to track it."""
    if model.format.name != "onnx":
        return
    from dcopt.versions import external_data

    top = Path(git("rev-parse", "--show-toplevel", cwd=cwd, check=False) or cwd or ".").resolve()
    for side in external_data.side_files(Path(cwd or ".").resolve() / path):
        rel = os.path.relpath(side, top)
        attr = git("check-attr", "filter", "--", rel, cwd=top, check=False) or ""
        if not attr.endswith(": dcopt"):
            print(f"dcopt: {path} keeps its weights in {rel}, which git stores whole; run "
                  f"'dcopt git track {shlex.quote(rel)} && git add --renormalize {shlex.quote(rel)}' to store it per "
                  "parameter", file=sys.stderr)


def _remembered(store: ObjectStore, manifest: dict) -> bytes:
    """The manifest's bytes, recorded in the store's index (what textconv looks models up in)."""
    text = manifests.dumps(manifest)
    index.remember(store, text, manifest)
    return text


def smudge(data: bytes, path: str, cwd=None) -> bytes:
    """A manifest -> the model's bytes, verified; anything else unchanged."""
    if not manifests.is_manifest(data):
        return data
    manifest, store = manifests.parse(data, path), repo_store(cwd)
    model = manifests.rebuild(manifest, store, path)
    index.remember(store, data, manifest)
    return model


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

def load_version(data: bytes, file: str, path=None, cwd=None, committed: bytes | None = None):
    """A ModelFile from a model's bytes or from a manifest (rebuilt from the store). ``committed``:
    the manifest git stores for ``data``, when known -- an external data file has no format of its
    own, its manifest says how it was cut; ``path``: where the work tree has it."""
    from dcopt.versions.params import ModelFile

    manifest = manifests.parse(committed, file) if committed else None
    if manifests.is_manifest(data):
        manifest = manifests.parse(data, file)
        data = manifests.rebuild(manifest, repo_store(cwd), file)
    fmt = _format_of(data, str(Path(path).resolve()) if path is not None else file, cwd, manifest) \
        if manifest is not None or path is not None else None
    return ModelFile(data, file, path, fmt)


def textconv(data: bytes, file: str, cwd=None) -> str:
    """A readable listing for git's line diff (``git log -p``): structure lines, then one line per
    parameter with how the store keeps it (dense, sparse, low-rank) and its digest. Git passes the
    smudged model, so its manifest is found by the model's sha256 (:mod:`dcopt.versions.index`)."""
    from dcopt.versions.params import ModelFile

    if manifests.is_manifest(data):
        return _manifest_listing(manifests.parse(data, file))
    digest = sha256(data)
    found = _find_manifest(digest, cwd)
    if found is not None:
        return _manifest_listing(found)
    model = ModelFile(data, file)
    lines = [f"dcopt model ({model.format.name}, {len(data)} bytes, sha256 {digest[:16]}; not in the store's index)"]
    lines += model.structure.lines()
    lines += [f"param {p.name}: {p.dtype}{list(p.shape)} sha256:{sha256(model.blob(p))[:16]}" for p in model.payloads]
    return "\n".join(lines) + "\n"


def _manifest_listing(m: dict) -> str:
    from dcopt.versions import updates

    lines = [f"dcopt model ({m['format']}, {m['size']} bytes, sha256 {m['sha256'][:16]})"]
    if m.get("lossy"):
        lines.append(f"lossy within tolerance {m['lossy']['tolerance']:g}")
    lines += m["structure"]
    lines += [f"param {p['name']}: {p['dtype']}{p['shape']} {updates.summary(p['update'])} "
              f"sha256:{p['update']['sha256'][:16]}" for p in m["params"]]
    return "\n".join(lines) + "\n"


def _find_manifest(model_sha256: str, cwd=None) -> dict | None:
    """The manifest of a model, from the store's index; on a miss (a store pulled from elsewhere)
    every manifest in the history is indexed once, then looked up again."""
    try:
        store = repo_store(cwd)
    except GitError:
        return None  # textconv outside a repository: list the model without update types
    found = index.recall(store, model_sha256)
    if found is None:
        for text, manifest in manifest_blobs(cwd):
            index.remember(store, text, manifest)
            if manifest["sha256"] == model_sha256:
                found = manifest
    return found


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
    committed = _committed(new_hex, cwd) or (new if manifests.is_manifest(new) else None)
    a = load_version(old, f"a/{path}", cwd=cwd, committed=_committed(old_hex, cwd))
    b = load_version(new, f"b/{path}", path if committed is None else None, cwd, committed)
    if a.data == b.data:
        return ""
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
    merged = ModelFile(result.data, path, fmt=(ours if result.template == "ours" else theirs).format)
    store = repo_store(cwd)
    manifest = manifests.build(merged, store, previous, _config_float("dcopt.tolerance", cwd))
    write_file(ours_file, _remembered(store, manifest))
    return f"dcopt merge {path}: " + "; ".join(result.lines())


# -- carrying the store between repositories on one file system (--transport files; see transport.py) -

def remote_store(remote: str, cwd=None) -> ObjectStore:
    """The store of another repository on this file system: a remote name or a path, bare or not."""
    url = git("remote", "get-url", remote, cwd=cwd, check=False) or remote
    url = url.removeprefix("file://")
    root = Path(cwd or ".") / url
    if not root.is_dir():
        raise GitError(f"'{remote}' is not a remote or repository directory on this machine (url {url}); "
                       "use the default --transport ref (git push/fetch of refs/dcopt/objects) for other remotes")
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


def cat_batch(ids: list[str], cwd=None):
    """(type, contents) of git objects, in order, from one ``git cat-file --batch``."""
    if not ids:
        return
    proc = subprocess.run(["git", "cat-file", "--batch"], cwd=cwd, input="\n".join(ids).encode() + b"\n",
                          capture_output=True, check=True)
    data, pos = proc.stdout, 0
    while pos < len(data):
        end = data.index(b"\n", pos)
        header = data[pos:end].split()
        if len(header) < 3:  # "<id> missing"
            pos = end + 1
            continue
        size = int(header[2])
        yield header[1].decode(), data[end + 1:end + 1 + size]
        pos = end + 1 + size + 1


def manifest_blobs(cwd=None, revs: tuple[str, ...] = HISTORY):
    """(bytes, parsed manifest) of every manifest blob in the history of ``revs``."""
    listing = git("rev-list", "--objects", *revs, cwd=cwd)
    blobs = [line.split(" ", 1)[0] for line in listing.splitlines() if " " in line]
    for kind, body in cat_batch(blobs, cwd):
        if kind == "blob" and manifests.is_manifest(body):
            try:
                yield body, manifests.parse(body)
            except ModelLoadError:
                continue  # a file that only looks like a manifest


def reachable_objects(cwd=None, revs: tuple[str, ...] = HISTORY) -> list[str]:
    """Every store object named by a manifest in the history of ``revs``."""
    out: dict[str, None] = {}
    for _, manifest in manifest_blobs(cwd, revs):
        out.update(dict.fromkeys(manifests.objects(manifest)))
    return list(out)
