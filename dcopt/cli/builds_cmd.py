"""``dcopt builds``: list recorded builds and diff two of them."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from dcopt.cli.kernels_cmd import open_store, store_option


@click.group()
def builds():
    """Compiled model builds (directories such as model.dcopt/) and their differences."""


@builds.command("ls")
@store_option
@click.option("--prune", is_flag=True, help="Forget recorded builds whose directory is gone.")
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON.")
def ls(store_dir, prune, as_json):
    """List the builds recorded in the store, newest first."""
    from dcopt.kernels import list_builds

    store = open_store(store_dir)
    records = list_builds(store, prune=prune)
    if as_json:
        click.echo(json.dumps([{"path": str(r.path), "created": r.created, "model": r.model, "model_hash": r.model_hash,
                                "target": r.target, "kernels": r.n_kernels, "status": r.status()} for r in records],
                              indent=1))
        return
    table = Table(title=f"{len(records)} build(s) recorded in {store.root}")
    for col in ("path", "created", "model", "model hash", "target", "kernels", "status"):
        table.add_column(col, justify="right" if col == "kernels" else "left")
    for r in records:
        table.add_row(str(r.path), r.created, r.model, r.model_hash[:12], r.target, str(r.n_kernels), r.status())
    Console().print(table)


@builds.command("diff")
@click.argument("a", type=click.Path())
@click.argument("b", type=click.Path())
@click.option("--source", "show_source", is_flag=True, help="Also print a unified diff of each changed kernel.")
@click.option("--json", "as_json", is_flag=True, help="Print the difference as JSON.")
def diff(a, b, show_source, as_json):
    """What changed from build A to build B: kernels, passes, patches, settings, benchmark."""
    from dcopt.kernels import diff_builds

    result = diff_builds(a, b)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=1))
        return
    for line in result.lines():
        click.echo(line)
    if show_source:
        for name, _, _ in result.kernels_changed:
            click.echo(result.source_diff(name), nl=False)
