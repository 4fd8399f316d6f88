"""``dcopt git ...``: set a repository up to version models, and the programs git runs for it
(filters, diff and merge drivers). See :mod:`dcopt.versions.git`."""

from __future__ import annotations

import sys

import click


@click.group("git")
def git_group():
    """Version models in git: per-parameter storage, diffs and merges."""


@git_group.command("install")
@click.option("--strategy", default=None, help="Also set dcopt.mergeStrategy: how the merge driver merges "
                                               "parameters both branches changed (else they are conflicts).")
@click.option("--tolerance", type=float, default=None,
              help="Also set dcopt.tolerance: low-rank updates may be lossy within this absolute error.")
def install(strategy, tolerance):
    """Write the dcopt filter, diff and merge drivers into this repository's .git/config."""
    from dcopt.versions import git
    from dcopt.versions.merge import strategy as find_strategy

    for key, value in git.install():
        click.echo(f"{key} = {value}")
    if strategy is not None:
        find_strategy(strategy)
        git.git("config", "--local", "dcopt.mergeStrategy", strategy)
        click.echo(f"dcopt.mergeStrategy = {strategy}")
    if tolerance is not None:
        git.git("config", "--local", "dcopt.tolerance", repr(tolerance))
        click.echo(f"dcopt.tolerance = {tolerance!r}")
    click.echo(f"store: {git.repo_store().root}")


@git_group.command("track")
@click.argument("patterns", nargs=-1, required=True)
def track(patterns):
    """Route files matching PATTERNS (e.g. "*.onnx") through dcopt (.gitattributes). For ONNX
    patterns, the external data files of matching models (and the usual *.onnx.data, *.onnx_data
    names) are tracked too, so they are stored per tensor rather than whole."""
    from dcopt.versions import git

    for pattern in patterns:
        path, added = git.track(pattern)
        click.echo(f"{'tracking' if added else 'already tracked'}: {pattern} ({path})")
        for side in git.side_file_patterns(pattern):
            path, added = git.track(side)
            if added:
                click.echo(f"tracking: {side} (ONNX external data) ({path})")
    click.echo("files git already has keep their stored form until 'git add --renormalize .'")


@git_group.command("clean")
@click.argument("path", default="")
def clean(path):
    """Filter: a model on stdin -> its manifest on stdout (parameters into the store)."""
    from dcopt.versions import git

    sys.stdout.buffer.write(git.clean(sys.stdin.buffer.read(), path))


@git_group.command("smudge")
@click.argument("path", default="")
def smudge(path):
    """Filter: a manifest on stdin -> the model on stdout, verified byte for byte."""
    from dcopt.versions import git

    sys.stdout.buffer.write(git.smudge(sys.stdin.buffer.read(), path))


@git_group.command("filter-process")
def filter_process():
    """Filter: git's long-running clean/smudge protocol on stdin/stdout."""
    from dcopt.versions import git

    click.get_current_context().exit(git.filter_process())


@git_group.command("textconv")
@click.argument("file")
def textconv(file):
    """Diff driver: a readable listing of a model or manifest (used by git log -p)."""
    from pathlib import Path

    from dcopt.versions import git

    click.echo(git.textconv(Path(file).read_bytes(), file), nl=False)


@git_group.command("diff-driver", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1)
def diff_driver(args):
    """Diff driver: git's external diff arguments (path old-file old-hex old-mode new-file ...)."""
    from dcopt.errors import ArgumentError
    from dcopt.versions import git

    if len(args) < 7:
        raise ArgumentError(f"expected git's 7 external-diff arguments, got {len(args)}", argument="args")
    click.echo(git.diff_driver(args[0], args[1], args[4], args[2], args[5]), nl=False)


@git_group.command("merge-driver")
@click.argument("base")
@click.argument("ours")
@click.argument("theirs")
@click.argument("path", default="model")
@click.option("--strategy", default=None, help="Overrides git config dcopt.mergeStrategy.")
def merge_driver(base, ours, theirs, path, strategy):
    """Merge driver: merge the manifests %O %A %B of PATH into %A (exit 1 on conflicts)."""
    from dcopt.versions import git

    click.echo(git.merge_driver(base, ours, theirs, path, strategy), err=True)


_TRANSPORT = click.option(
    "--transport", type=click.Choice(["ref", "files"]), default="ref", show_default=True,
    help="ref: store objects travel as blobs on refs/dcopt/objects with git push/fetch (any remote git "
         "reaches); files: copy between store directories (REMOTE on this file system).")


@git_group.command("push-store")
@click.argument("remote")
@_TRANSPORT
def push_store(remote, transport):
    """Send the store objects every commit needs to REMOTE (a remote name, URL or repository path)."""
    from dcopt.versions import git, transport as transports

    local = git.repo_store()
    names = git.reachable_objects()
    present = [n for n in names if local.has(n)]
    if transport == "ref":
        copied = transports.push(remote, local, present)
    else:
        copied = git.copy_objects(local, git.remote_store(remote), present)
    click.echo(f"pushed {copied} object(s) ({len(present) - copied} already there)")
    if len(present) < len(names):
        click.echo(f"{len(names) - len(present)} object(s) the history names are not in this store and were not "
                   "pushed (pull them from where they are first)", err=True)


@git_group.command("pull-store")
@click.argument("remote")
@_TRANSPORT
def pull_store(remote, transport):
    """Fetch the store objects every local commit needs from REMOTE (run after git fetch or clone
    --no-checkout, before checking models out)."""
    from dcopt.versions import git, transport as transports

    local = git.repo_store()
    names = [n for n in git.reachable_objects() if not local.has(n)]
    if transport == "ref":
        copied = transports.pull(remote, local, names)
    else:
        copied = git.copy_objects(git.remote_store(remote), local, names)
    click.echo(f"pulled {copied} object(s)")
