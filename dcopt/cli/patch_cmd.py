"""``dcopt patch`` and ``dcopt patches ls``: apply idea patches by URI, and list what exists.

    dcopt patch model.onnx -p "swap_activation?from=Relu&to=Gelu" -p fold_batchnorm -o out.onnx
    dcopt patch model.onnx -p fuse_layernorm --explain            # dry run: why did it not match?
    dcopt patch model.onnx -p my_idea --patch-file my_ideas.py -o out.onnx
    dcopt patches ls [NAME...] [--patch-file F]

Every URI is checked before the model is even loaded, so a typo costs nothing and the error
lists what is valid. The report prints, per patch, where it matched (node names), the near
misses with ``--explain``, and a structural diff (nodes added/removed/rewired, parameters and
FLOPs before and after). Without ``-o`` nothing is written.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from dcopt.cli.recorded import recorded
from dcopt.errors import DcoptError

_FILE_HELP = "A Python file whose @patch functions are registered first (repeatable)."


def _load_files(patch_files) -> None:
    from dcopt.passes.patches import load_patch_file

    for path in patch_files:
        load_patch_file(path)


@click.command("patch")
@recorded("patch")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--patch", "-p", "uris", multiple=True, required=True, metavar="URI",
              help="A patch as name?param=value&...; repeat to chain (applied in order).")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write the patched model (.onnx or .json).")
@click.option("--patch-file", "patch_files", multiple=True, type=click.Path(dir_okay=False), help=_FILE_HELP)
@click.option("--explain", is_flag=True, help="List the candidate sites each patch refused, and why.")
@click.option("--no-validate", is_flag=True, help="Skip the numerical/structural check of each patch's result.")
@click.option("--strict", is_flag=True, help="Fail if a patch changes nothing.")
@click.option("--max-lines", default=20, show_default=True, help="Sites/refusals listed per patch.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def patch_command(model, uris, output, patch_files, explain, no_validate, strict, max_lines, as_json):
    """Apply patches (URIs) to MODEL, in order; show where they matched and what changed."""
    from dcopt import api
    from dcopt.passes.patches import apply_patches, parse_uri
    from dcopt.runs.record import current_run

    _load_files(patch_files)
    calls = [parse_uri(u) for u in uris]
    if output and Path(output).resolve() == Path(model).resolve():
        raise DcoptError("refusing to overwrite the input model; choose another --output", file=model)
    if output:
        api.check_model_output(output)  # before patching: a bad path costs nothing
    graph = api.load_graph(model)
    report = apply_patches(graph, calls, explain=explain, validate=not no_validate)
    if as_json:
        click.echo(json.dumps({"model": str(model), "output": output, **report.to_dict()}, indent=2, default=str))
    else:
        click.echo(report.format(explain=explain, max_lines=max_lines))
    current_run().log_output("patch-report.json", {"model": str(model), **report.to_dict()})
    current_run().log_metrics(nodes_after=len(report.graph.nodes), patches_modified=sum(s.modified for s in report.steps))
    unchanged = [s.uri for s in report.steps if not s.modified]
    if strict and unchanged:
        raise DcoptError(f"patch(es) changed nothing: {', '.join(unchanged)} (run with --explain to see why)",
                         file=model)
    if output:
        api.save_graph(report.graph, output)
        if not as_json:
            click.echo(f"wrote {output} ({len(report.graph.nodes)} nodes)")
    elif not as_json:
        click.echo("dry run: no --output given, nothing written")


@click.group("patches")
def patches_group():
    """List and describe the registered patches."""


@patches_group.command("ls")
@click.argument("names", nargs=-1)
@click.option("--patch-file", "patch_files", multiple=True, type=click.Path(dir_okay=False), help=_FILE_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the registry as JSON.")
def ls_command(names, patch_files, as_json):
    """Show the registered patches with their parameters (NAMES: only those, with full docs)."""
    from dcopt.passes.patches import available_patches, discovery_errors, get_patch

    _load_files(patch_files)
    chosen = [get_patch(n) for n in names] if names else list(available_patches().values())
    if as_json:
        click.echo(json.dumps([_describe(p) for p in chosen], indent=2, default=str))
        return
    for p in chosen:
        click.echo(f"{p.name}  ({p.kind})  {p.summary}")
        for param in p.params:
            click.echo(f"    {param.describe():<48} {param.doc}")
        if names and p.doc:
            click.echo("\n".join("    " + line for line in p.doc.splitlines()[1:]).rstrip())
    for problem in discovery_errors():
        click.echo(f"warning: {problem}", err=True)


def _describe(p) -> dict:
    return {"name": p.name, "kind": p.kind, "summary": p.summary, "doc": p.doc, "source": p.source,
            "params": [{"name": q.name, "type": q.type_name(), "default": None if q.required else q.default,
                        "required": q.required, "choices": q.choices, "doc": q.doc} for q in p.params]}
