"""``dcopt runs``: the recorded runs (every compile, bench, opt and patch) -- list, show, compare,
diff, label, tag, remove, export/import, push/pull, plot. Runs are named by index (1 = latest,
``2:5`` a range), id prefix or label (:mod:`dcopt.runs.select`)."""

from __future__ import annotations

import json

import click
from rich.table import Table

from dcopt.cli.console import stdout_console


def _home():
    from dcopt.runs.home import dcopt_home

    return dcopt_home()


def _rows():
    from dcopt.runs.select import list_runs

    return list_runs(_home())


def _positions(rows) -> dict[str, int]:
    return {r.id: i for i, r in enumerate(rows, 1)}


#: Above this many rows a table is laid out as plain aligned text: rich measures every cell
#: (~0.4 ms a row), and a thousand runs must list in well under half a second.
RICH_ROWS = 100


def _print_table(headers, cells) -> None:
    from rich import box

    from dcopt.runs.compare import cell

    texts = [[cell(v) for v in row] for row in cells]
    if len(texts) > RICH_ROWS:
        widths = [max([len(h)] + [len(t[i]) for t in texts]) for i, h in enumerate(headers)]
        line = lambda row: "  ".join(c.rjust(w) if i == 0 else c.ljust(w)  # noqa: E731
                                     for i, (c, w) in enumerate(zip(row, widths))).rstrip()
        click.echo("\n".join([line(headers), "  ".join("-" * w for w in widths)] + [line(t) for t in texts]))
        return
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for h in headers:
        table.add_column(h, justify="right" if h == "#" else "left", overflow="fold")
    for row in texts:
        table.add_row(*row)
    stdout_console().print(table)


def _summary(row) -> str:
    """The headline result of a run, one cell."""
    from dcopt.runs.compare import cell

    m = row.metrics
    if "latency_ms" in m:
        peers = ", ".join(f"{k.split('.', 1)[1]} {cell(v)}x" for k, v in m.items() if k.startswith("speedup."))
        return f"{cell(m['latency_ms'])} ms" + (f" (speedup vs {peers})" if peers else "")
    if "compile_s" in m:
        return f"{m.get('generated_kernels', 0)} kernels, {cell(m['compile_s'])} s"
    if "nodes_after" in m:
        return (f"{m['nodes_before']} -> " if "nodes_before" in m else "") + f"{m['nodes_after']} nodes"
    return ""


@click.group("runs")
def runs():
    """Recorded runs: every dcopt compile, bench, opt and patch (stored under $DCOPT_HOME)."""


@runs.command("ls")
@click.argument("refs", nargs=-1)
@click.option("--kind", help="Only runs of this command (compile, bench, opt, patch).")
@click.option("--status", help="Only runs with this status (running, completed, error, terminated).")
@click.option("--label", help="Only runs whose label contains this text.")
@click.option("--tag", help="Only runs with this tag.")
@click.option("-n", "--limit", type=click.IntRange(1), default=None, help="Show at most N runs (latest first).")
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON.")
@click.option("--reindex", is_flag=True, help="First rebuild the index from the run directories.")
def ls_cmd(refs, kind, status, label, tag, limit, as_json, reindex):
    """List runs, latest first (# is the index that names a run: 1 = latest)."""
    from dcopt.runs.compare import when
    from dcopt.runs.select import select_runs

    if reindex:
        from dcopt.runs.select import reindex as rebuild

        indexed, dropped = rebuild(_home())
        click.echo(f"reindexed {indexed} run(s), dropped {dropped} whose directory is gone", err=True)

    rows = _rows()
    positions = _positions(rows)
    chosen = [r for r in select_runs(refs, rows)
              if (not kind or r.kind == kind) and (not status or r.status == status)
              and (not label or label in r.label) and (not tag or tag in r.tags)][:limit]
    if as_json:
        click.echo(json.dumps([{"index": positions[r.id], "id": r.id, "started": r.started, "finished": r.finished,
                                "kind": r.kind, "model": r.model, "status": r.status, "label": r.label,
                                "tags": r.tags, "options": r.options, "metrics": r.metrics,
                                "build_key": r.build_key} for r in chosen], indent=1))
        return
    if not chosen:
        click.echo("no runs" + (" match" if rows else f" recorded yet under {_home()}"))
        return
    _print_table(["#", "id", "started", "kind", "model", "status", "label", "result"],
                 [[positions[r.id], r.short_id, when(r.started), r.kind, r.model, r.status,
                   " ".join([r.label] + [f"#{t}" for t in r.tags]).strip(), _summary(r)] for r in chosen])


@runs.command("show")
@click.argument("ref", default="1")
@click.option("--json", "as_json", is_flag=True, help="Print run.json as it is.")
@click.option("--log", "show_log", is_flag=True, help="Also print the run's output log.")
def show_cmd(ref, as_json, show_log):
    """Everything recorded about one run (default: the latest)."""
    from dcopt.runs.compare import cell, when
    from dcopt.runs.diff import load_record
    from dcopt.runs.home import runs_dir
    from dcopt.runs.record import ANNOTATIONS, LOG, read_json
    from dcopt.runs.select import select_one

    row = select_one(ref, _rows())
    record = load_record(_home(), row.id)
    path = runs_dir(_home()) / row.id
    if as_json:
        click.echo(json.dumps({**record, "annotations": read_json(path / ANNOTATIONS, {})}, indent=1))
        return
    out = stdout_console()
    p = lambda text: out.print(text, markup=False, highlight=False)  # noqa: E731
    duration = f"{record['finished'] - record['started']:.2f} s" if record.get("finished") else "-"
    p(f"run {record['id']}  ({row.status}{': ' + record['error'] if record.get('error') else ''})")
    p(f"  path:     {path}")
    p(f"  command:  {' '.join(record.get('argv', []))}")
    p(f"  kind:     {record['kind']}    started {when(record['started'])}    took {duration}")
    if row.label or row.tags:
        p(f"  label:    {row.label or '-'}    tags: {', '.join(row.tags) or '-'}")
    model = record.get("model") or {}
    if model:
        p(f"  model:    {model.get('path')}  sha256 {model.get('sha256') or '-'}")
    host = record.get("host", {})
    p(f"  host:     {host.get('hostname')}  {host.get('cpu_model')} ({host.get('usable_cpus')} usable CPUs; "
      f"{' '.join(host.get('simd_flags', [])[:6])})")
    p("  dcopt:    " + ", ".join(f"{k} {v}" for k, v in record.get("toolchain", {}).items()
                                 if v and not k.startswith("cpu_")))
    p("options:")
    for k, v in sorted(record.get("options", {}).items()):
        p(f"  {k} = {json.dumps(v)}")
    build = record.get("build") or {}
    if build:
        p("build:")
        for k in ("key", "pipeline_applied", "patches", "bindings", "module_key", "native_key", "steps", "output"):
            if build.get(k) not in (None, [], {}):
                p(f"  {k} = {json.dumps(build[k])}")
        p(f"  kernels = {len(build.get('kernels', []))} ({', '.join(build.get('kernels', [])[:4])}"
          f"{', ...' if len(build.get('kernels', [])) > 4 else ''})")
    if record.get("metrics"):
        p("metrics:")
        width = max(len(k) for k in record["metrics"])
        for k, v in sorted(record["metrics"].items()):
            p(f"  {k:<{width}}  {cell(v)}")
    if record.get("files"):
        p("files:")
        for rel in record["files"]:
            p(f"  {rel}")
    if show_log and (path / LOG).is_file():
        p("log:")
        p((path / LOG).read_text(errors="replace").rstrip())


@runs.command("compare")
@click.argument("refs", nargs=-1)
@click.option("-c", "--columns", "columns", multiple=True, metavar="NAME",
              help="Columns to show (repeatable or comma-separated): fields, metrics, options.")
@click.option("--where", "wheres", multiple=True, metavar="EXPR",
              help="Keep runs where NAME OP VALUE holds (= != < <= > >= ~), e.g. model=resnet50 (repeatable).")
@click.option("--min", "minimize", metavar="NAME", help="Sort by this column, smallest first (e.g. latency).")
@click.option("--max", "maximize", metavar="NAME", help="Sort by this column, largest first.")
@click.option("--top", type=click.IntRange(1), help="Keep the first N runs (after sorting).")
@click.option("--kind", help="Only runs of this command (compile, bench, opt, patch).")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one object per run).")
def compare_cmd(refs, columns, wheres, minimize, maximize, top, kind, as_csv, as_json):
    """A table of runs side by side: by default what they varied and their headline metrics."""
    from dcopt.runs.compare import compare
    from dcopt.runs.select import select_runs

    rows = _rows()
    chosen = [r for r in select_runs(refs, rows) if not kind or r.kind == kind]
    cols = [c.strip() for spec in columns for c in spec.split(",") if c.strip()]
    headers, cells = compare(chosen, _positions(rows), columns=cols, wheres=wheres, minimize=minimize,
                             maximize=maximize, top=top)
    if as_json:
        click.echo(json.dumps([dict(zip(headers, c)) for c in cells], indent=1, default=str))
    elif as_csv:
        import csv
        import sys

        writer = csv.writer(sys.stdout)
        writer.writerow(headers)
        writer.writerows([["" if v is None else json.dumps(v) if isinstance(v, (list, dict)) else v for v in c]
                          for c in cells])
    elif not cells:
        click.echo("no runs match")
    else:
        _print_table(headers, cells)


@runs.command("diff")
@click.argument("refs", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print the difference as JSON.")
def diff_cmd(refs, as_json):
    """What differs from run A to run B, and what it did to the metrics.

    No argument: the two latest runs (2 -> 1); one: that run -> the latest."""
    from dcopt.errors import InputError
    from dcopt.runs.diff import diff_runs
    from dcopt.runs.select import select_one

    rows = _rows()
    if len(refs) > 2:
        raise InputError(f"runs diff takes at most two runs, got {len(refs)}")
    refs = list(refs) if len(refs) == 2 else [refs[0], "1"] if refs else ["2", "1"]
    a, b = (select_one(r, rows) for r in refs)
    positions = _positions(rows)
    d = diff_runs(_home(), a.id, b.id, labels=(f"#{positions[a.id]}", f"#{positions[b.id]}"))
    if as_json:
        click.echo(json.dumps(d.to_json(), indent=1, default=str))
    else:
        stdout_console().print("\n".join(d.lines()), markup=False, highlight=False)


def _annotate(refs, change) -> None:
    from dcopt.runs.home import runs_dir
    from dcopt.runs.index import RunIndex
    from dcopt.runs.record import ANNOTATIONS, read_json, write_json
    from dcopt.runs.select import select_runs

    home = _home()
    for row in select_runs(refs, _rows()):
        path = runs_dir(home) / row.id / ANNOTATIONS
        annotations = read_json(path, {"label": "", "tags": []})
        change(annotations)
        write_json(path, annotations)
        from dcopt.runs.record import content_hash

        RunIndex(home).update(row.id, label=annotations["label"], tags=annotations["tags"],
                              sha=content_hash(path.parent) if row.status != "running" else "")
        click.echo(f"{row.short_id}: label {annotations['label'] or '-'}, tags {', '.join(annotations['tags']) or '-'}")


@runs.command("label")
@click.argument("ref")
@click.argument("label", required=False)
@click.option("--clear", is_flag=True, help="Remove the label.")
def label_cmd(ref, label, clear):
    """Give run(s) REF a LABEL (a label then names its latest run)."""
    from dcopt.errors import InputError

    if (label is None) == (not clear):
        raise InputError("give a LABEL or --clear (not both)")
    _annotate([ref], lambda a: a.update(label="" if clear else label))


@runs.command("tag")
@click.argument("refs", nargs=-1, required=True)
@click.option("-a", "--add", "add", multiple=True, help="Tag to add (repeatable).")
@click.option("-d", "--delete", "delete", multiple=True, help="Tag to remove (repeatable).")
def tag_cmd(refs, add, delete):
    """Add or remove tags of runs REFS."""
    from dcopt.errors import InputError

    if not add and not delete:
        raise InputError("give tags to --add and/or --delete")
    _annotate(refs, lambda a: a.update(tags=sorted((set(a.get("tags", [])) | set(add)) - set(delete))))


@runs.command("rm")
@click.argument("refs", nargs=-1, required=True)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def rm_cmd(refs, yes):
    """Delete runs (their directories under $DCOPT_HOME and index rows); never a running one."""
    from dcopt.runs.record import remove_run
    from dcopt.runs.select import select_runs

    chosen = select_runs(refs, _rows())
    running = [r.short_id for r in chosen if r.status == "running"]
    chosen = [r for r in chosen if r.status != "running"]
    if running:
        click.echo(f"skipping running run(s): {', '.join(running)}", err=True)
    if not chosen:
        return
    if not yes:
        click.confirm(f"delete {len(chosen)} run(s): {', '.join(r.short_id for r in chosen[:8])}"
                      f"{' ...' if len(chosen) > 8 else ''}?", abort=True)
    for r in chosen:
        remove_run(_home(), r.id)
    click.echo(f"deleted {len(chosen)} run(s)")


def print_compare(run_ids) -> None:
    """The compare table of the runs ``run_ids`` (what ``dcopt bench --matrix`` ends with)."""
    from dcopt.runs.compare import compare

    rows = _rows()
    wanted = set(run_ids)
    headers, cells = compare([r for r in rows if r.id in wanted], _positions(rows), minimize="latency_ms"
                             if any("latency_ms" in r.metrics for r in rows if r.id in wanted) else None)
    _print_table(headers, cells)


@runs.command("plot")
@click.argument("refs", nargs=-1)
@click.option("--chart", type=click.Choice(["latency", "speedup", "metric"]), default="latency", show_default=True,
              help="latency: distributions per runtime (bench runs); speedup: bars vs peers per run; "
                   "metric: one metric over runs.")
@click.option("--metric", default="latency_ms", show_default=True, help="The metric of --chart metric.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Chart file (.png or .svg).")
def plot_cmd(refs, chart, metric, output):
    """Draw a chart of runs REFS (default: the latest run for latency, every run otherwise)."""
    from dcopt.errors import InputError
    from dcopt.runs import plot
    from dcopt.runs.home import runs_dir
    from dcopt.runs.record import OUTPUTS, read_json
    from dcopt.runs.select import select_runs

    rows = _rows()
    positions = _positions(rows)
    chosen = select_runs(refs or (["1"] if chart == "latency" else []), rows)
    from dcopt.runs.compare import cell, varied_options

    varied = varied_options(chosen)

    def name(r) -> str:
        """#N, label or id, and the values of the options the plotted runs varied."""
        values = " ".join(cell(r.options.get(o)) for o in varied if o in r.options)
        return f"#{positions[r.id]} {r.label or r.short_id}" + (f" ({values})" if values else "")

    if chart == "latency":
        models = []
        for r in chosen:
            path = runs_dir(_home()) / r.id / OUTPUTS / "bench.json"
            if not path.is_file():
                raise InputError(f"run {r.short_id} ({r.kind}) has no benchmark result to plot latencies from")
            for m in read_json(path)["models"]:
                models.append({**m, "name": f"{name(r)}: {m['name']}"})
        written = plot.latency_chart(models, output)
    elif chart == "speedup":
        groups = {name(r): {k.split(".", 1)[1]: v for k, v in r.metrics.items() if k.startswith("speedup.")}
                  for r in reversed(chosen)}
        written = plot.speedup_chart(groups, output)
    else:
        from dcopt.runs.compare import resolve_column

        column = resolve_column(metric, chosen)
        points = [(name(r), float(column.get(r))) for r in reversed(chosen)
                  if isinstance(column.get(r), (int, float)) and not isinstance(column.get(r), bool)]
        written = plot.metric_chart(points, column.name, output)
    click.echo(f"wrote {written}")


@runs.command("push")
@click.argument("remote")
@click.argument("refs", nargs=-1)
def push_cmd(remote, refs):
    """Send finished runs (REFS, default all) to REMOTE: a directory, s3://BUCKET/PREFIX or HOST:PATH.

    Idempotent and resumable: runs already there (same content hash) are skipped."""
    from dcopt.runs.remote import open_remote, push
    from dcopt.runs.select import select_runs

    target = open_remote(remote)
    sent, skipped = push(_home(), select_runs(refs, _rows()), target, log=click.echo)
    click.echo(f"{target.name}: pushed {sent} run(s), {skipped} already there or unfinished")


@runs.command("pull")
@click.argument("remote")
@click.argument("ids", nargs=-1)
def pull_cmd(remote, ids):
    """Fetch runs from REMOTE (IDS: id prefixes; default all) into $DCOPT_HOME, verified file by file."""
    from dcopt.runs.remote import open_remote, pull

    source = open_remote(remote)
    fetched, skipped = pull(_home(), source, set(ids) if ids else None, log=click.echo)
    click.echo(f"{source.name}: pulled {fetched} run(s), {skipped} already here")


@runs.command("export")
@click.argument("refs", nargs=-1)
@click.option("-o", "--output", "directory", type=click.Path(file_okay=False), help="Directory to copy runs into.")
@click.option("--mlflow", "mlflow_uri", metavar="URI", help="MLflow tracking URI to log runs to (e.g. sqlite:///mlflow.db).")
@click.option("--experiment", default="dcopt", show_default=True, help="MLflow experiment name.")
def export_cmd(refs, directory, mlflow_uri, experiment):
    """Export runs REFS (default all) to a directory (-o) or an MLflow tracking store (--mlflow)."""
    from dcopt.errors import InputError
    from dcopt.runs.select import select_runs

    if (directory is None) == (mlflow_uri is None):
        raise InputError("give one of -o DIR and --mlflow URI")
    chosen = select_runs(refs, _rows())
    if mlflow_uri:
        from dcopt.runs.mlflow_export import export_runs

        done, skipped = export_runs(_home(), chosen, mlflow_uri, experiment, log=click.echo)
        click.echo(f"{mlflow_uri}: exported {done} run(s), {skipped} already there or unfinished")
        return
    from dcopt.runs.remote import DirRemote, push

    sent, skipped = push(_home(), chosen, DirRemote(directory), log=click.echo)
    click.echo(f"{directory}: exported {sent} run(s), {skipped} already there or unfinished")


@runs.command("import")
@click.argument("directory", type=click.Path(file_okay=False, exists=True))
def import_cmd(directory):
    """Import the runs of DIRECTORY (written by dcopt runs export or push) into $DCOPT_HOME."""
    from dcopt.runs.remote import DirRemote, pull

    fetched, skipped = pull(_home(), DirRemote(directory), log=click.echo)
    click.echo(f"{directory}: imported {fetched} run(s), {skipped} already here")
