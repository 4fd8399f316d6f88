"""``dcopt opt``: run a pass pipeline over a model and write the result."""

from __future__ import annotations

import click

from dcopt.cli.pipeline_options import pipeline_options
from dcopt.cli.recorded import recorded


@click.command()
@recorded("opt")
@click.argument("model", type=click.Path(dir_okay=False))
@pipeline_options()
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write the result (.onnx or IR .json).")
@click.option("--verify", is_flag=True, help="Verify the IR after every pass.")
@click.option("--check", is_flag=True, help="Check every pass numerically against the reference executor.")
@click.option("--dump-dir", type=click.Path(file_okay=False), help="Write the IR before/after each pass here.")
@click.option("--explain", is_flag=True, help="Also list what each pass refused to rewrite, and why.")
def opt(model, pipeline, output, verify, check, dump_dir, explain):
    """Optimize MODEL with a pass pipeline; print what each pass did."""
    from dcopt import api
    from dcopt.passes.manager import PassManager
    from dcopt.runs.record import current_run

    steps, label = pipeline
    if output:
        api.check_model_output(output)  # before optimizing: a bad path costs nothing
    graph = api.load_graph(model)
    before = len(graph.nodes)
    manager = PassManager(steps, name=label, verify=verify, check_equivalence=check, dump_dir=dump_dir)
    result = manager(graph)
    click.echo(result.report.format(refusals=explain))
    click.echo(f"{label}: {before} -> {len(result.graph.nodes)} nodes")
    ctx = manager.context
    for line in result.report.checks_summary(verify, check, ctx.rtol, ctx.atol):
        click.echo(line)
    current_run().log_output("pass-report.txt", result.report.format(refusals=True))
    current_run().log_params(pipeline=label)
    current_run().log_metrics(nodes_before=before, nodes_after=len(result.graph.nodes))
    if output:
        api.save_graph(result.graph, output)
        click.echo(f"wrote {output}")
