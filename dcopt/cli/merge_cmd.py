"""``dcopt merge BASE OURS THEIRS -o OUT``: a three-way merge of model versions, per parameter,
never interactive. Structural conflicts are listed and exit non-zero with nothing written."""

from __future__ import annotations

from pathlib import Path

import click


def _weights(text: str | None) -> tuple[float, float] | None:
    from dcopt.errors import ArgumentError

    if text is None:
        return None
    try:
        values = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise ArgumentError(f"expected two numbers like 0.7,0.3, got {text!r}", argument="--weights") from None
    if len(values) != 2:
        raise ArgumentError(f"expected two numbers (ours, theirs), got {len(values)}", argument="--weights")
    return values


def check_merged(path: Path, seed: int = 0) -> list[str]:
    """Compile the merged model with dcopt, run it on random inputs, compare with onnxruntime."""
    import numpy as np

    import dcopt
    from dcopt.errors import DcoptError

    session = dcopt.compile(path)
    feeds = session.random_feeds(seed=seed)
    ours = session.run(None, feeds)
    lines = [f"check: dcopt compiled and ran {path.name} on random inputs "
             f"({', '.join(f'{k}{list(v.shape)}' for k, v in feeds.items())})"]
    try:
        import onnxruntime as ort
    except ImportError:
        return lines + ["check: onnxruntime not installed; not compared"]
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    worst = 0.0
    for name, x, y in zip([o.name for o in session.get_outputs()], ours, ref):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        err = float(np.max(np.abs(x - y) / (1e-3 + np.abs(y)))) if x.size else 0.0
        worst = max(worst, err)
        if not np.allclose(x, y, rtol=1e-3, atol=1e-4):
            raise DcoptError(f"merged model's output '{name}' differs between dcopt and onnxruntime "
                             f"(max relative error {err:.3g})", file=str(path))
    return lines + [f"check: outputs match onnxruntime (max relative error {worst:.2g})"]


@click.command("merge")
@click.argument("base")
@click.argument("ours")
@click.argument("theirs")
@click.option("-o", "--output", required=True, help="Where to write the merged model (a new file, or one to replace).")
@click.option("--strategy", "-s", default=None,
              help="How parameters both sides changed are merged: ours, theirs, base, average, weighted, "
                   "task-arithmetic, ties (and plugins). Without it, such parameters are conflicts.")
@click.option("--weights", default=None, metavar="W_OURS,W_THEIRS",
              help="Weights for weighted, task-arithmetic and ties (e.g. 0.7,0.3).")
@click.option("--density", type=float, default=0.2, show_default=True,
              help="TIES: fraction of each task vector's largest entries kept.")
@click.option("--check", is_flag=True, help="Compile the result with dcopt, run it on random inputs and compare "
                                            "with onnxruntime (ONNX).")
def merge(base, ours, theirs, output, strategy, weights, density, check):
    """Merge OURS and THEIRS, two versions of BASE, into OUTPUT."""
    from dcopt.cli.diff_cmd import read_version
    from dcopt.outputs import check_output_path
    from dcopt.versions.merge import merge_models, strategy as find_strategy
    from dcopt.outputs import write_file

    out = check_output_path(output)
    if out.is_dir():
        from dcopt.outputs import OutputPathError

        raise OutputPathError(f"'{output}' is a directory; name a model file, e.g. -o merged.onnx")
    if strategy is not None:
        find_strategy(strategy)  # a wrong name fails before any work
    models = [read_version(p, arg) for p, arg in ((base, "BASE"), (ours, "OURS"), (theirs, "THEIRS"))]
    result = merge_models(*models, strategy, _weights(weights), density)
    write_file(out, result.data)
    click.echo(f"wrote {output}: " + "; ".join(result.lines()))
    if check:
        if models[0].format.name != "onnx":
            click.echo("check: only ONNX models are compiled; skipped")
        else:
            for line in check_merged(out):
                click.echo(line)
