"""``dcopt kernels``: list, show and garbage-collect the generated kernels in the kernel store."""

from __future__ import annotations

import json
import time
from datetime import datetime

import click
from dcopt.cli.console import stdout_console
from rich.table import Table

from dcopt.errors import InputError

store_option = click.option(
    "--store", "store_dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
    help="Kernel store directory (default: $DCOPT_CACHE_DIR/kernels, else ~/.cache/dcopt/kernels).")


def open_store(store_dir):
    from dcopt.kernels import KernelStore

    return KernelStore(store_dir)


def human_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else "?"


def _provenance(entry) -> str:
    from dcopt.kernels.store import describe_provenance

    if not entry.provenance:
        return ""
    return describe_provenance(entry.provenance) or json.dumps(entry.provenance, sort_keys=True)


def _short_features(features: dict) -> str:
    """The CPU feature list is ~120 items: show its size and a hash (--json has it in full)."""
    from dcopt.kernels.keys import sha256_hex

    flags = features.get("features", "")
    if not isinstance(flags, str) or "," not in flags:
        return json.dumps(features, sort_keys=True)
    items = flags.split(",")
    enabled = sum(f.startswith("+") for f in items)
    rest = {k: v for k, v in features.items() if k != "features"}
    return (f"{json.dumps(rest, sort_keys=True)} with {enabled} features enabled, {len(items) - enabled} disabled "
            f"(sha256 {sha256_hex(flags)[:12]})")


@click.group()
def kernels():
    """Generated kernels in the kernel store (content-addressed by their key)."""


def _users(store) -> dict[str, list]:
    """Kernel key -> builds listing it, from the builds catalog of the cache the store is in."""
    from dcopt.kernels.builds import BuildCatalog

    try:
        return BuildCatalog(store.root.parent).kernel_users()
    except Exception:  # noqa: BLE001 - an unreadable catalog only loses the "builds" column
        return {}


def _build_label(build) -> str:
    return f"{build.model} ({build.key[:12] if build.kind == 'cache' else build.path})"


@kernels.command("ls")
@store_option
@click.option("--build", "build_ref", default=None, metavar="BUILD",
              help="Only the kernels of this build (a build directory, or a cache build's key prefix).")
@click.option("--json", "as_json", is_flag=True, help="Print the entries' metadata as JSON.")
def ls(store_dir, build_ref, as_json):
    """List stored kernels (one entry per generated kernel), most recently used first, with the
    builds that use each (--json for everything in meta.json)."""
    store = open_store(store_dir)
    users = _users(store)
    entries = sorted(store.entries(), key=lambda e: e.last_used, reverse=True)
    if build_ref is not None:
        from dcopt.kernels.builds import BuildCatalog

        build = BuildCatalog(store.root.parent).find(build_ref)
        wanted = {k.get("key") for k in build.manifest.get("kernels", []) if isinstance(k, dict)}
        entries = [e for e in entries if e.key in wanted]
    if as_json:
        click.echo(json.dumps([{"path": str(e.path), "builds": [str(b.path) for b in users.get(e.key, [])], **e.meta}
                               for e in entries], indent=1, sort_keys=True))
        return
    total = sum(e.size for e in entries)
    table = Table(title=f"{len(entries)} kernel(s), {human_size(total)} in {store.root}")
    for col in ("key", "target", "kind", "functions", "builds", "last used", "size", "provenance"):
        table.add_column(col, justify="right" if col in ("size", "builds") else "left",
                         no_wrap=col not in ("provenance", "functions"))
    for e in entries:
        table.add_row(e.key[:12], e.target, e.kind, ", ".join(e.functions), str(len(users.get(e.key, []))),
                      _when(e.last_used), human_size(e.size), _provenance(e))
    stdout_console().print(table)


@kernels.command("show")
@click.argument("key_prefix")
@store_option
@click.option("--no-source", is_flag=True, help="Only the metadata.")
@click.option("--json", "as_json", is_flag=True, help="Print meta.json (with an integrity field) instead.")
def show(key_prefix, store_dir, no_source, as_json):
    """Show one kernel's key components, files, provenance, integrity and source."""
    store = open_store(store_dir)
    entry = store.find(key_prefix)
    problem = store.verify(entry.key)
    if as_json:
        click.echo(json.dumps({"path": str(entry.path), "integrity": problem or "ok", **entry.meta}, indent=1,
                              sort_keys=True))
        return
    console = stdout_console(highlight=False, soft_wrap=True)
    console.print(f"kernel {entry.key}", markup=False)
    console.print(f"  path       {entry.path}", markup=False)
    console.print(f"  created    {entry.meta.get('created', '?')} (built in {entry.meta.get('build_seconds', 0):.3f} s)",
                  markup=False)
    console.print(f"  last used  {_when(entry.last_used)}", markup=False)
    console.print(f"  integrity  {'ok' if problem is None else 'DAMAGED: ' + problem}", markup=False)
    console.print(f"  in use     {'yes (a loaded build holds it: gc keeps it)' if store.in_use(entry.key) else 'no'}",
                  markup=False)
    users = _users(store).get(entry.key, [])
    console.print(f"  builds     {', '.join(_build_label(b) for b in users) if users else 'none recorded'}",
                  markup=False)
    for title, value in (("key components", entry.components), ("provenance", entry.provenance),
                         ("build info", entry.build_info)):
        console.print(f"{title}:", markup=False)
        for name, v in sorted(value.items()):
            if name == "target_features":
                text = _short_features(v)
            else:
                text = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
            console.print(f"  {name}: {text}", markup=False)
    table = Table(title="files")
    for col in ("file", "size", "sha256"):
        table.add_column(col)
    for name, rec in sorted(entry.meta.get("files", {}).items()):
        table.add_row(name, human_size(rec["size"]), rec["sha256"][:16])
    console.print(table)
    if not no_source and entry.source_path is not None:
        console.print(f"--- {entry.meta['source']} ---", markup=False)
        console.print(entry.source(), markup=False)


@kernels.command("gc")
@store_option
@click.option("--older-than", type=float, default=None, metavar="DAYS", help="Remove kernels unused for DAYS days.")
@click.option("--max-size", type=float, default=None, metavar="MB",
              help="Then remove least recently used kernels until the store holds at most MB megabytes.")
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
def gc(store_dir, older_than, max_size, dry_run):
    """Remove old kernels, damaged entries and abandoned temporary files."""
    if (older_than is not None and older_than < 0) or (max_size is not None and max_size < 0):
        raise InputError("--older-than and --max-size must not be negative")
    store = open_store(store_dir)
    start = time.perf_counter()
    removed = store.gc(older_than_days=older_than, max_bytes=None if max_size is None else int(max_size * 1e6),
                       dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for r in removed:
        name = r.entry.key[:12] if r.entry is not None else r.path.name[:20]
        click.echo(f"{verb} {name} ({human_size(r.size)}): {r.reason}")
    entries = list(store.entries())
    busy = sum(1 for e in entries if store.in_use(e.key))
    if busy:
        click.echo(f"kept {busy} kernel(s) a loaded build uses")
    left = sum(e.size for e in entries)
    if dry_run:
        left -= sum(r.entry.size for r in removed if r.entry is not None)
    click.echo(f"{verb} {len(removed)} item(s), {human_size(sum(r.size for r in removed))}; "
               f"{human_size(left)} in the store ({time.perf_counter() - start:.2f} s)")
