"""``dcopt report``: FLOPs, bytes moved and arithmetic intensity per kernel, and how each pass
changed them -- as a terminal table, JSON (``--json``) and a self-contained HTML page (``--html``)."""

from __future__ import annotations

import json
from pathlib import Path

import click
from dcopt.cli.console import stdout_console
from rich.table import Table

from dcopt.cli.inspect_cmd import collect_symbols, human
from dcopt.cli.pipeline_options import parse_dims, pipeline_options


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


def _html_kernel_row(k: dict) -> str:
    import html

    ai = k["arithmetic_intensity"]
    cells = [html.escape(k["node"]), html.escape(k["op"]), human(k["flops"]), human(k["bytes_moved"], "B"),
             "" if ai is None else f"{ai:.2f}"]
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def render_html(report: dict, title: str) -> str:
    """A self-contained page: an SVG bar chart of bytes moved after each pass, and the tables."""
    import html

    bars = report["passes"]
    peak = max((b["bytes_moved"] for b in bars), default=1) or 1
    width, bar_h, gap, label_w = 720, 22, 8, 260
    rows = []
    for i, b in enumerate(bars):
        y = i * (bar_h + gap)
        total = (width - label_w) * b["bytes_moved"] / peak
        between = (width - label_w) * b["transient_bytes"] / peak
        rows.append(
            f'<text x="0" y="{y + 15}" font-size="12">{html.escape(b["after"])}</text>'
            f'<rect x="{label_w}" y="{y}" width="{total:.1f}" height="{bar_h}" fill="#9ecae1"/>'
            f'<rect x="{label_w}" y="{y + 5}" width="{between:.1f}" height="{bar_h - 10}" fill="#3182bd"/>'
            f'<text x="{label_w + total + 4:.1f}" y="{y + 15}" font-size="11">{human(b["bytes_moved"], "B")}</text>')
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width + 80}" height="{len(bars) * (bar_h + gap)}">'
           + "".join(rows) + "</svg>")
    kernel_rows = "".join(_html_kernel_row(k) for k in sorted(report["kernels"], key=lambda k: -(k["bytes_moved"] or 0)))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 8px;text-align:right}"
            "td:first-child,th:first-child{text-align:left}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p>pipeline {html.escape(report['pipeline'])}; light bars: bytes moved by "
            "all kernels; dark bars: bytes moved between kernels</p>"
            f"{svg}<h2>kernels</h2><table><tr><th>kernel</th><th>op</th><th>FLOPs</th><th>bytes moved</th>"
            f"<th>FLOP/byte</th></tr>{kernel_rows}</table></body></html>")


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@pipeline_options()
@click.option("--dim", "dims", multiple=True, metavar="SYMBOL=N", help="Bind a symbolic dim (default 1).")
@click.option("--top", default=15, show_default=True, help="How many kernels the table lists.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the report as JSON.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), help="Also write an HTML page with a plot.")
def report(model, pipeline, dims, top, json_path, html_path):
    """Data-movement report of MODEL: per kernel, in total, and per pass."""
    from dcopt import api

    steps, label = pipeline
    graph = api.load_graph(model)
    bindings = {sym: 1 for sym in sorted(collect_symbols(graph))}
    bindings.update(parse_dims(dims))
    data = build_report(graph, steps, label, bindings)
    _print(data, top)
    if json_path:
        Path(json_path).write_text(json.dumps(data, indent=2, default=str))
        click.echo(f"wrote {json_path}")
    if html_path:
        Path(html_path).write_text(render_html(data, Path(model).name))
        click.echo(f"wrote {html_path}")
