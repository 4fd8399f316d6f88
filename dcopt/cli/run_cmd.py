"""``dcopt run``: execute a model on given (or random) inputs and write outputs as .npy."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import click
import numpy as np
from rich.console import Console
from rich.table import Table

from dcopt.cli.pipeline_options import parse_dims
from dcopt.errors import InputError


def parse_input_specs(specs: tuple[str, ...]) -> dict[str, np.ndarray]:
    """``name=file.npy`` pairs -> arrays; every problem is an InputError naming the input."""
    feeds = {}
    for spec in specs:
        name, sep, file = spec.partition("=")
        if not sep or not name or not file:
            raise InputError(f"--input expects NAME=FILE.npy, got '{spec}'")
        path = Path(file)
        if not path.is_file():
            raise InputError(f"file '{file}' not found", input=name)
        try:
            feeds[name] = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise InputError(f"cannot read '{file}' as a .npy array: {exc}", input=name) from None
    return feeds


def write_npy(path: Path, array: np.ndarray) -> None:
    """Atomic .npy write: no half-written outputs if the process dies."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array, allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _stats(a: np.ndarray) -> tuple[str, str, str]:
    if a.size == 0 or a.dtype.kind not in "biuf":
        return "", "", ""
    f = a.astype(np.float64)
    return f"{f.min():.6g}", f"{f.max():.6g}", f"{f.mean():.6g}"


@click.command()
@click.argument("model", type=click.Path())
@click.option("--input", "-i", "inputs", multiple=True, metavar="NAME=FILE.npy", help="An input array (repeatable).")
@click.option("--random-inputs", is_flag=True, help="Feed random data for inputs not given with --input.")
@click.option("--seed", default=0, show_default=True, help="Seed for --random-inputs.")
@click.option("--dim", "dims", multiple=True, metavar="SYMBOL=N", help="Size of a symbolic dim for --random-inputs.")
@click.option("--backend", default=None, type=click.Choice(["reference", "cpu"]),
              help="Which executor runs the model (default: cpu for a build directory, reference for a model file; "
                   "cpu on a model file compiles it first).")
@click.option("--output-dir", "-o", type=click.Path(file_okay=False), default="dcopt_outputs", show_default=True,
              help="Where outputs are written, one NAME.npy per output.")
def run(model, inputs, random_inputs, seed, dims, backend, output_dir):
    """Run MODEL (a .dcopt build, .onnx, IR .json or .pt2) and write its outputs as .npy files."""
    from dcopt import api
    import dcopt.compiled as compiled

    feeds = parse_input_specs(inputs)
    bindings = parse_dims(dims)
    if compiled.is_build_dir(model) or backend == "cpu":
        backend = "cpu"
        sess = compiled.load(model) if compiled.is_build_dir(model) else compiled.compile(model, dims=bindings)
        if random_inputs:
            generated = sess.random_feeds(seed=seed, dims=bindings)
            feeds = {**{k: v for k, v in generated.items() if k not in feeds}, **feeds}
        start = time.perf_counter()
        outputs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    else:
        backend = backend or "reference"
        graph = api.load_graph(model)
        if random_inputs:
            generated = api.random_inputs(graph, seed=seed, bindings=bindings)
            feeds = {**{k: v for k, v in generated.items() if k not in feeds}, **feeds}
        start = time.perf_counter()
        outputs = api.run(graph, feeds, backend=backend, file=model)
    elapsed = time.perf_counter() - start
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = Table(title=f"{Path(model).name}: {len(outputs)} output(s) in {elapsed * 1e3:.1f} ms ({backend})")
    for col in ("output", "dtype", "shape", "min", "max", "mean", "file"):
        table.add_column(col)
    for name, value in outputs.items():
        value = np.asarray(value)
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
        path = out_dir / f"{safe}.npy"
        write_npy(path, value)
        table.add_row(name, str(value.dtype), str(list(value.shape)), *_stats(value), str(path))
    Console().print(table)
