"""``dcopt report``: FLOPs, bytes moved and arithmetic intensity per kernel, and how each pass
changed them -- as a terminal table, JSON (``--json``) and, with ``--html``, the pipeline as ``dcopt view``
shows it, in one self-contained HTML file (every stage's graph, pass reports, node details)."""

from __future__ import annotations

import json
from pathlib import Path

import click
from dcopt.cli.console import stdout_console
from rich.table import Table

from dcopt.cli.inspect_cmd import collect_symbols, human
from dcopt.cli.pipeline_options import checked_dims, pipeline_options


def build_report(graph, steps, label: str, bindings: dict[str, int]) -> dict:
    from dcopt.ir.cost import graph_cost
    from dcopt.ir.groups import is_group
    from dcopt.passes.manager import PassManager
    from dcopt.passes.movement import MovementInstrument, snapshot

    from dcopt.frontends.onnx_shapes import fill_types_from_folding, specialize

    if bindings:
        specialize(graph, bindings)
    fill_types_from_folding(graph)  # measure the unoptimized graph with the sizes folding reveals
    instrument = MovementInstrument(bindings)
    result = PassManager(steps, name=label, instruments=[instrument])(graph)
    snapshots = instrument.snapshots or [snapshot(graph, "input", bindings)]
    final = result.graph
    cost = graph_cost(final, bindings)
    kinds = {n.label: (n.attrs.get("kind") if is_group(n) else None) for n in final.nodes}
    kernels = [
        {**c.to_dict(), "kind": kinds.get(c.node)} for c in cost.nodes if not c.constant
    ]
    first, last = snapshots[0], snapshots[-1]
    return {
        "pipeline": label,
        "bindings": bindings,
        "passes": [s.to_dict() for s in snapshots],
        "pass_records": result.report.to_dict()["records"],
        "kernels": kernels,
        "totals": {
            "before": first.to_dict(), "after": last.to_dict(),
            "bytes_moved_reduction": 1 - last.bytes_moved / first.bytes_moved if first.bytes_moved else 0.0,
            "transient_bytes_reduction": (1 - last.transient_bytes / first.transient_bytes
                                          if first.transient_bytes else 0.0),
        },
    }


def _print(report: dict, top: int) -> None:
    console = stdout_console()
    passes = Table(title=f"data movement through pipeline {report['pipeline']}", title_justify="left")
    for col in ("after", "kernels", "FLOPs", "bytes moved", "between kernels", "change"):
        passes.add_column(col, justify="left" if col == "after" else "right")
    previous = None
    for s in report["passes"]:
        change = "" if previous is None or not previous["transient_bytes"] else \
            f"{100 * (s['transient_bytes'] / previous['transient_bytes'] - 1):+.1f}%"
        passes.add_row(s["after"], str(s["kernels"]), human(s["flops"]), human(s["bytes_moved"], "B"),
                       human(s["transient_bytes"], "B"), change)
        previous = s
    console.print(passes)
    kernels = Table(title=f"top {top} kernels by bytes moved", title_justify="left")
    for col in ("kernel", "op", "FLOPs", "bytes moved", "FLOP/byte"):
        kernels.add_column(col, overflow="fold")
    ranked = sorted(report["kernels"], key=lambda k: -(k["bytes_moved"] or 0))
    for k in ranked[:top]:
        op = k["op"] + (f" ({k['kind']})" if k["kind"] else "")
        ai = k["arithmetic_intensity"]
        kernels.add_row(k["node"], op, human(k["flops"]), human(k["bytes_moved"], "B"),
                        "-" if ai is None else f"{ai:.2f}")
    console.print(kernels)
    t = report["totals"]
    console.print(f"bytes moved between kernels: {human(t['before']['transient_bytes'], 'B')} -> "
                  f"{human(t['after']['transient_bytes'], 'B')} ({100 * t['transient_bytes_reduction']:.1f}% less); "
                  f"all kernels: {human(t['before']['bytes_moved'], 'B')} -> {human(t['after']['bytes_moved'], 'B')}; "
                  f"kernels: {t['before']['kernels']} -> {t['after']['kernels']}")


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@pipeline_options()
@click.option("--dim", "dims", multiple=True, metavar="SYMBOL=N", help="Bind a symbolic dim (default 1).")
@click.option("--top", default=15, show_default=True, help="How many kernels the table lists.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the report as JSON.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False),
              help="Also write the dcopt view of the pipeline as one self-contained HTML file.")
def report(model, pipeline, dims, top, json_path, html_path):
    """Data-movement report of MODEL: per kernel, in total, and per pass."""
    from dcopt import api

    steps, label = pipeline
    graph = api.load_graph(model)
    bindings = {sym: 1 for sym in sorted(collect_symbols(graph))}
    bindings.update(checked_dims(dims, bindings))
    data = build_report(graph, steps, label, bindings)
    _print(data, top)
    if json_path:
        Path(json_path).write_text(json.dumps(data, indent=2, default=str))
        click.echo(f"wrote {json_path}")
    if html_path:  # the same views as `dcopt view MODEL --export FILE`
        from dcopt.cli.view_cmd import open_session, write_html
        from dcopt.view.page import static_page

        write_html(html_path, static_page(open_session(model, pipeline, dims, lower=True, profile=False)))
        click.echo(f"wrote {html_path}")
