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
    """Route files matching PATTERNS (e.g. "*.onnx") through dcopt (.gitattributes)."""
    from dcopt.versions import git

    for pattern in patterns:
        path, added = git.track(pattern)
        click.echo(f"{'tracking' if added else 'already tracked'}: {pattern} ({path})")


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


@git_group.command("push-store")
@click.argument("remote")
def push_store(remote):
    """Copy the store objects of every commit to REMOTE's store (a remote name or repository path
    on this file system)."""
    from dcopt.versions import git

    names = git.reachable_objects()
    copied = git.copy_objects(git.repo_store(), git.remote_store(remote), names)
    click.echo(f"pushed {copied} object(s) ({len(names) - copied} already there)")


@git_group.command("pull-store")
@click.argument("remote")
def pull_store(remote):
    """Copy the store objects every local commit needs from REMOTE's store (run after git fetch)."""
    from dcopt.versions import git

    local = git.repo_store()
    names = [n for n in git.reachable_objects() if not local.has(n)]
    copied = git.copy_objects(git.remote_store(remote), local, names)
    click.echo(f"pulled {copied} object(s)")
