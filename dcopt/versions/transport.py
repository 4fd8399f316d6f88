"""Carrying the parameter store with plain git: store objects as blobs on ``refs/dcopt/objects``.

Why a ref: ``git push``/``git fetch`` then move the store to and from any remote git can reach (ssh,
https, a bare repository), with git's own transfer, compression and authentication, and nothing to
install on the server. The ref points at a commit whose tree holds one blob per store object at
``<2 hex>/<62 hex>`` (the object's uncompressed bytes, so a blob *is* the object); each push adds a
commit with the new objects, so the ref only fast-forwards. Two people pushing at once: the second
push fetches the remote ref first and records a merge commit whose tree is the union (content
addressing means the same path always holds the same bytes).

What it costs: the pushing repository keeps each pushed object twice (in the store and, packed and
delta-compressed, in git's object database); ``dcopt git push-store --transport files`` copies
stores directly between repositories on one file system instead.
"""

from __future__ import annotations

import subprocess
import time

from dcopt.versions.errors import StoreError
from dcopt.versions.store import ObjectStore

REF = "refs/dcopt/objects"
FETCHED = "refs/dcopt/fetched"  # the remote's ref as last fetched (scratch)


def _git():
    from dcopt.versions import git

    return git


def _tip(ref: str, cwd=None) -> str | None:
    return _git().git("rev-parse", "--verify", "-q", ref + "^{commit}", cwd=cwd, check=False) or None


def _tree(ref: str | None, cwd=None) -> dict[str, str]:
    """Object name -> blob id of the objects on a ref's tree."""
    if ref is None:
        return {}
    out = {}
    for line in _git().git("ls-tree", "-r", ref, cwd=cwd).splitlines():
        meta, path = line.split("\t", 1)
        out[path.replace("/", "")] = meta.split()[2]
    return out


def fetch(remote: str, cwd=None) -> str | None:
    """Fetch the remote's ``refs/dcopt/objects``; its commit, or None when the remote has none."""
    git = _git()
    listed = git.git("ls-remote", remote, REF, cwd=cwd)
    if not listed.strip():
        return None
    git.git("fetch", "-q", "--no-tags", remote, f"+{REF}:{FETCHED}", cwd=cwd)
    return _tip(FETCHED, cwd)


def push(remote: str, store: ObjectStore, names: list[str], cwd=None) -> int:
    """Put the objects ``names`` (from ``store``) on the remote's ref; returns how many were new
    there. A missing local object is a StoreError naming it, before anything is pushed."""
    git = _git()
    theirs = fetch(remote, cwd)
    ours = _tip(REF, cwd)
    have = {**_tree(theirs, cwd), **_tree(ours, cwd)}
    new = [n for n in dict.fromkeys(names) if n not in have]
    stream = [f"commit {REF}\n".encode(), b"committer dcopt <dcopt@localhost> %d +0000\n" % int(time.time())]
    message = f"dcopt: {len(new)} store object(s)\n".encode()
    stream.append(b"data %d\n%s" % (len(message), message))
    if ours:
        stream.append(f"from {ours}\n".encode())
    if theirs and theirs != ours:
        stream.append(f"{'merge' if ours else 'from'} {theirs}\n".encode())
        mine = _tree(ours, cwd)
        stream += [f"M 100644 {blob} {n[:2]}/{n[2:]}\n".encode() for n, blob in _tree(theirs, cwd).items()
                   if n not in mine]
    for name in new:
        data = store.get(name, f"store object {name[:12]}")
        stream.append(f"M 100644 inline {name[:2]}/{name[2:]}\n".encode() + b"data %d\n" % len(data) + data + b"\n")
    if new or (theirs and ours and theirs != ours):
        proc = subprocess.run(["git", "fast-import", "--quiet"], cwd=cwd, input=b"".join(stream) + b"done\n",
                              capture_output=True)
        if proc.returncode != 0:
            raise git.GitError(f"git fast-import of {len(new)} store object(s) failed: "
                               f"{proc.stderr.decode(errors='replace').strip()[-500:]}")
    elif theirs and not ours:
        git.git("update-ref", REF, theirs, cwd=cwd)
    if _tip(REF, cwd) not in (None, theirs):
        git.git("push", "-q", remote, f"{REF}:{REF}", cwd=cwd)
    return len(new)


def pull(remote: str, store: ObjectStore, names: list[str], cwd=None) -> int:
    """Copy the objects ``names`` that ``store`` lacks from the remote's ref, each verified against
    its name; returns how many. Objects the remote does not have are a StoreError listing them
    (after the others are stored)."""
    wanted = [n for n in dict.fromkeys(names) if not store.has(n)]
    if not wanted:
        return 0
    theirs = fetch(remote, cwd)
    tree = _tree(theirs, cwd)
    present = [n for n in wanted if n in tree]
    for name, data in zip(present, (body for _, body in _git().cat_batch([tree[n] for n in present], cwd))):
        if store.put(data) != name:
            raise StoreError(f"object {name} on {remote}'s {REF} is corrupted (its bytes hash differently)")
    if theirs and not _tip(REF, cwd):
        _git().git("update-ref", REF, theirs, cwd=cwd)
    missing = [n for n in wanted if n not in tree]
    if missing:
        raise StoreError(f"{len(missing)} store object(s) the history needs are not on {remote}'s {REF} "
                         f"(e.g. {', '.join(m[:12] for m in missing[:3])}); push them from a repository that has "
                         f"them with 'dcopt git push-store {remote}' ({len(present)} others were pulled)")
    return len(present)
