"""``dcopt inspect``: what a model is, and where its bytes move.

Prints the inputs and outputs with shapes, an op histogram with FLOPs and bytes moved per op
type, parameter count and bytes, and totals -- the data-movement view of a model that dcopt's
passes work to improve. ``--json`` gives the same as machine-readable JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from dcopt.cli.console import stdout_console
from rich.table import Table

from dcopt.cli.pipeline_options import checked_dims


def human(n: float | None, unit: str = "") -> str:
    """1234567 -> '1.23 M' (decimal prefixes); None -> '?'."""
    if n is None:
        return "?"
    for prefix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {prefix}{unit}"
    return f"{n:g} {unit}".rstrip()


def collect_symbols(graph) -> set[str]:
    symbols = set()
    for c in graph.containers.values():
        symbols |= c.type.symbols
    return symbols


def inspect_report(graph, file: str, bindings: dict[str, int], per_node: bool) -> dict:
    from dcopt.ir.cost import graph_cost

    cost = graph_cost(graph, bindings)
    return {
        "file": file,
        "graph": graph.name,
        "opset": graph.opset,
        "metadata": graph.metadata,
        "bindings": bindings,
        "nodes": len(graph.nodes),
        "inputs": [{"name": n, "dtype": graph.containers[n].type.dtype,
                    "shape": graph.containers[n].type.shape} for n in graph.inputs],
        "outputs": [{"name": n, "dtype": graph.containers[n].type.dtype,
                     "shape": graph.containers[n].type.shape} for n in graph.outputs],
        "ops": graph.op_histogram(),
        "cost": cost.to_dict(include_nodes=per_node),
    }


def _print_report(report: dict, per_node: bool, top: int) -> None:
    console = stdout_console()
    cost = report["cost"]
    opsets = ", ".join(f"{d or 'ai.onnx'} {v}" for d, v in sorted(report["opset"].items()))
    console.print(f"[bold]{report['file']}[/]  graph '{report['graph']}', {report['nodes']} nodes, opset {opsets}")
    if report["bindings"]:
        console.print("symbolic dims bound for costing: " + ", ".join(f"{k}={v}" for k, v in report["bindings"].items()))
    patches = report["metadata"].get("dcopt.patches")
    if patches:
        console.print(f"patch history: {patches}")

    io = Table(title="inputs and outputs", title_justify="left")
    for col in ("kind", "name", "dtype", "shape"):
        io.add_column(col)
    for kind in ("inputs", "outputs"):
        for entry in report[kind]:
            shape = "?" if entry["shape"] is None else "[" + ", ".join("?" if d is None else str(d) for d in entry["shape"]) + "]"
            io.add_row(kind[:-1], entry["name"], entry["dtype"], shape)
    console.print(io)

    total_bytes = cost["total_bytes"] or 1
    ops = Table(title="ops (run-time nodes; data movement = bytes read + written)", title_justify="left")
    for col, justify in (("op", "left"), ("count", "right"), ("FLOPs", "right"), ("bytes moved", "right"),
                         ("% bytes", "right"), ("FLOP/byte", "right")):
        ops.add_column(col, justify=justify)
    for op, agg in sorted(cost["by_op"].items(), key=lambda kv: -kv[1]["bytes"]):
        intensity = agg["flops"] / agg["bytes"] if agg["bytes"] else None
        ops.add_row(op, str(agg["count"]) + (f" ({agg['unknown']} ?)" if agg["unknown"] else ""),
                    human(agg["flops"]), human(agg["bytes"], "B"), f"{100 * agg['bytes'] / total_bytes:.1f}",
                    "-" if intensity is None else f"{intensity:.2f}")
    console.print(ops)

    if per_node:
        nodes = Table(title=f"top {top} nodes by bytes moved", title_justify="left")
        for col in ("node", "op", "FLOPs", "read", "written", "FLOP/byte"):
            nodes.add_column(col)
        ranked = sorted((n for n in cost["nodes"] if n["known"] and not n["constant"]),
                        key=lambda n: -(n["bytes_moved"] or 0))
        for n in ranked[:top]:
            ai = n["arithmetic_intensity"]
            nodes.add_row(n["node"], n["op"], human(n["flops"]), human(n["bytes_read"], "B"),
                          human(n["bytes_written"], "B"), "-" if ai is None else f"{ai:.2f}")
        console.print(nodes)

    totals = Table(title="totals", title_justify="left", show_header=False)
    totals.add_column("what")
    totals.add_column("value", justify="right")
    totals.add_row("parameters", f"{cost['parameter_count']:,} ({human(cost['parameter_bytes'], 'B')})")
    if cost["weight_count"] != cost["parameter_count"]:
        totals.add_row("weights incl. constant-produced", f"{cost['weight_count']:,} ({human(cost['weight_bytes'], 'B')})")
    totals.add_row("FLOPs", human(cost["total_flops"]))
    totals.add_row("bytes moved (all kernels)", human(cost["total_bytes"], "B"))
    totals.add_row("bytes moved between kernels", human(cost["transient_bytes"], "B"))
    ai = cost["arithmetic_intensity"]
    totals.add_row("arithmetic intensity", "-" if ai is None else f"{ai:.2f} FLOP/byte")
    if cost["constant_nodes"]:
        totals.add_row("constant-producing nodes (folded at compile time)", str(cost["constant_nodes"]))
    if cost["unknown_nodes"]:
        totals.add_row("nodes with unknown sizes (not in totals)", str(cost["unknown_nodes"]))
    console.print(totals)


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--dim", "dims", multiple=True, metavar="SYMBOL=N",
              help="Bind a symbolic dim for costing (default: every symbol = 1).")
@click.option("--per-node", is_flag=True, help="Also list the nodes that move the most bytes.")
@click.option("--top", default=15, show_default=True, help="How many nodes --per-node lists.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def inspect(model, dims, per_node, top, as_json):
    """Show MODEL's inputs/outputs, op histogram, parameters, FLOPs and bytes moved."""
    from dcopt import api

    graph = api.load_graph(model, check_memory=False)  # describing allocates nothing: only int64 limits
    bindings = {sym: 1 for sym in sorted(collect_symbols(graph))}
    bindings.update(checked_dims(dims, bindings))
    report = inspect_report(graph, str(Path(model)), bindings, per_node)
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
    else:
        _print_report(report, per_node, top)
