"""``dcopt convert``: ONNX <-> dcopt IR JSON (lossless), and ONNX -> ONNX re-export."""

from __future__ import annotations

import click

from dcopt.errors import DcoptError


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False),
              help="Destination: .json (dcopt IR) or .onnx.")
@click.option("--text", is_flag=True, help="Also print the IR as text.")
def convert(model, output, text):
    """Convert MODEL between ONNX (.onnx) and dcopt IR (.json)."""
    from dcopt import api

    if str(output) == str(model):
        raise DcoptError("refusing to overwrite the input model; choose another --output", file=model)
    api.check_model_output(output)
    graph = api.load_graph(model, check_memory=False)  # a format change allocates nothing new
    api.save_graph(graph, output)
    if text:
        click.echo(str(graph))
    click.echo(f"wrote {output} ({len(graph.nodes)} nodes, {len(graph.parameters)} parameters)")
