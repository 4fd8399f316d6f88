"""``dcopt builds``: the builds ``dcopt compile`` wrote and the compile cache holds: list them,
show one, explain the difference between two, and collect the cache within a size budget."""

from __future__ import annotations

import json
import time

import click
from dcopt.cli.console import stdout_console
from rich.table import Table

from dcopt.cli.kernels_cmd import _when, human_size
from dcopt.errors import InputError

cache_option = click.option(
    "--cache", "cache_dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
    help="Compile cache root (default: $DCOPT_CACHE_DIR, else ~/.cache/dcopt).")


def _catalog(cache_dir):
    from dcopt.backends.cpu.source import cache_root
    from dcopt.kernels.builds import BuildCatalog

    return BuildCatalog(cache_root(cache_dir))


def _steps(manifest: dict) -> str:
    steps = manifest.get("steps") or {}
    return f"{sum(steps.values())} ({steps.get('kernel', 0)} kernels)" if steps else "-"


@click.group()
def builds():
    """Compiled model builds (directories such as model.dcopt/ and the compile cache's)."""


@builds.command("ls")
@cache_option
@click.option("--prune", is_flag=True, help="Forget recorded output builds whose directory is gone.")
@click.option("--json", "as_json", is_flag=True, help="Print the builds as JSON.")
def ls(cache_dir, prune, as_json):
    """List builds, most recently used first: the cache's and those dcopt compile wrote."""
    catalog = _catalog(cache_dir)
    found = catalog.all(prune=prune)
    if as_json:
        click.echo(json.dumps([b.to_json() for b in found], indent=1))
        return
    total = sum(b.size for b in found if b.kind == "cache")
    table = Table(title=f"{len(found)} build(s); the cache's take {human_size(total)} in {catalog.root}")
    for col in ("build", "kind", "model", "pipeline", "sizes", "steps", "size", "used", "status"):
        table.add_column(col, justify="right" if col == "size" else "left", overflow="fold")
    for b in found:
        m = b.manifest
        patches = f" +{len(m.get('patches') or [])} patch(es)" if m.get("patches") else ""
        table.add_row(b.key[:16] if b.kind == "cache" else str(b.path), b.kind, b.model,
                      f"{m.get('pipeline', '?')}{patches}", json.dumps(m.get("bindings") or {}) if m else "",
                      _steps(m), human_size(b.size), _when(b.last_used), b.status)
    stdout_console(soft_wrap=True).print(table)


@builds.command("show")
@click.argument("build")
@cache_option
@click.option("--json", "as_json", is_flag=True, help="Print the manifest (with the build's path) as JSON.")
def show(build, cache_dir, as_json):
    """Show one build (a directory, or a cache build's key prefix): provenance, options, passes,
    steps, kernels, toolchain and files."""
    b = _catalog(cache_dir).find(build)
    m = b.manifest
    if as_json:
        click.echo(json.dumps({"path": str(b.path), "kind": b.kind, **m}, indent=1))
        return
    out = stdout_console(highlight=False, soft_wrap=True)
    model = m.get("model") or {}
    rows = [("path", f"{b.path} ({b.kind})"), ("model", f"{model.get('name')} sha256 {model.get('sha256', '')[:16]}"),
            ("dcopt", m.get("dcopt", "?")),
            ("pipeline", f"{m.get('pipeline')} (ran: {m.get('pipeline_applied')})"),
            ("patches", ", ".join(m.get("patches") or []) or "-"), ("sizes", json.dumps(m.get("bindings") or {})),
            ("steps", json.dumps(m.get("steps") or {})), ("not native", json.dumps(m.get("not_native") or {})),
            ("memory", ", ".join(f"{k} {human_size(v)}" for k, v in (m.get("memory") or {}).items())),
            ("compiled in", f"{m.get('compile_seconds', '?')} s"), ("size", human_size(b.size))]
    for name, value in rows:
        out.print(f"{name:12} {value}", markup=False)
    passes = m.get("passes") or []
    if passes:
        table = Table(title="passes")
        for col in ("pass", "changed", "nodes", "counters"):
            table.add_column(col, overflow="fold")
        for r in passes:
            counters = ", ".join(f"{k}={v}" for k, v in r["stats"].items())
            table.add_row(r["name"], "yes" if r["modified"] else "no", f"{r['nodes'][0]}->{r['nodes'][1]}", counters)
        out.print(table)
    out.print("toolchain: " + ", ".join(f"{k}={v}" for k, v in sorted((m.get("toolchain") or {}).items())
                                        if not k.startswith("cpu_features")), markup=False)
    table = Table(title="files")
    for col in ("file", "size", "sha256"):
        table.add_column(col)
    for name, rec in sorted((m.get("files") or {}).items()):
        table.add_row(name, human_size(rec["size"]), rec["sha256"][:16])
    out.print(table)


@builds.command("diff")
@click.argument("a")
@click.argument("b")
@cache_option
@click.option("--source", "show_source", is_flag=True, help="Also print a unified diff of each changed kernel.")
@click.option("--json", "as_json", is_flag=True, help="Print the difference as JSON.")
def diff(a, b, cache_dir, show_source, as_json):
    """What changed from build A to build B (directories or cache key prefixes), and why:
    model weights vs structure, options, pass decisions, kernels, toolchain, memory."""
    from dcopt.kernels.diff import diff_builds

    catalog = _catalog(cache_dir)
    result = diff_builds(catalog.find(a).path, catalog.find(b).path)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=1))
        return
    for line in result.lines():
        click.echo(line)
    if show_source:
        for label, _, _ in result.kernels_changed:
            click.echo(result.source_diff(label), nl=False)


@builds.command("gc")
@cache_option
@click.option("--max-size", type=float, default=None, metavar="MB",
              help="Remove least recently used cache builds (then kernel-store entries) until together "
                   "they take at most MB megabytes.")
@click.option("--older-than", type=float, default=None, metavar="DAYS", help="Remove cache builds unused for DAYS days.")
@click.option("--kernels/--no-kernels", default=True, show_default=True,
              help="Apply the same limits to the kernel store (its own least-recently-used order).")
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
def gc(cache_dir, max_size, older_than, kernels, dry_run):
    """Collect the compile cache: whole builds and, with --kernels, the kernel store. Never a
    build a running process has loaded, never a build directory dcopt compile wrote."""
    if (older_than is not None and older_than < 0) or (max_size is not None and max_size < 0):
        raise InputError("--older-than and --max-size must not be negative")
    from dcopt.kernels import KernelStore

    catalog = _catalog(cache_dir)
    start = time.perf_counter()
    max_bytes = None if max_size is None else int(max_size * 1e6)
    removed = catalog.gc(max_bytes=max_bytes, older_than_days=older_than, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for b, why in removed:
        click.echo(f"{verb} build {b.key[:16]} ({b.model}, {human_size(b.size)}): {why}")
    freed = sum(b.size for b, _ in removed)
    left = sum(b.size for b in catalog.cached()) - (freed if dry_run else 0)
    kernel_freed, kernel_count = 0, 0
    if kernels:  # one budget for both: the kernel store gets what the builds left of it
        store = KernelStore(catalog.root / "kernels")
        budget = None if max_bytes is None else max(0, max_bytes - left)
        for r in store.gc(older_than_days=older_than, max_bytes=budget, dry_run=dry_run):
            kernel_freed += r.size
            kernel_count += 1
    click.echo(f"{verb} {len(removed)} build(s), {human_size(freed)}"
               + (f"; {kernel_count} kernel entr(ies), {human_size(kernel_freed)}" if kernels else "")
               + f"; cache builds now {human_size(left)} ({time.perf_counter() - start:.2f} s)")
