"""``dcopt run``: execute a model on given (or random) inputs and write outputs as .npy."""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np
from dcopt.cli.console import stdout_console
from rich.table import Table

from dcopt.cli.pipeline_options import parse_dims
from dcopt.errors import DcoptError, InputError


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


def output_directory(path: str, create: bool = False) -> Path:
    """The directory outputs go to (``create``: made if missing). It may already exist (files in
    it are replaced one by one, nothing else is touched); a path under /proc, /sys or /dev, below
    a file, or that cannot be created is an OutputPathError naming it. Checked before running,
    created after, so a failed run leaves no empty directory."""
    from dcopt.outputs import PSEUDO_ROOTS, OutputPathError

    out = Path(path)
    try:
        resolved = out.resolve()
        for root in PSEUDO_ROOTS:
            if resolved == Path(root) or Path(root) in resolved.parents:
                raise OutputPathError(f"refusing to write outputs to '{path}': {root} is a kernel pseudo file system")
        for parent in [resolved, *resolved.parents]:
            if parent.exists() and not parent.is_dir():
                raise OutputPathError(f"cannot write outputs to '{path}': '{parent}' is a file, not a directory")
        if create:
            out.mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError) as exc:
        raise OutputPathError(f"cannot create output directory '{path}': {getattr(exc, 'strerror', None) or exc}") \
            from None
    return out


def write_npy(path: Path, array: np.ndarray) -> None:
    """Atomic .npy write: no half-written outputs if the process dies."""
    from dcopt.outputs import staged_file

    try:
        with staged_file(path) as tmp, open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)
    except OSError as exc:
        raise DcoptError(f"cannot write '{path}': {exc.strerror or exc}") from None


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
@click.option("--profile", is_flag=True,
              help="Then time every step of the compiled model (median of --profile-reps runs of each) and print the "
                   "totals per kind and the slowest steps (cpu backend).")
@click.option("--top", default=15, show_default=True, type=click.IntRange(min=0), help="Slowest steps --profile lists.")
@click.option("--profile-reps", default=20, show_default=True, type=click.IntRange(min=1),
              help="Timed runs per step for --profile.")
def run(model, inputs, random_inputs, seed, dims, backend, output_dir, profile, top, profile_reps):
    """Run MODEL (a .dcopt build, .onnx, IR .json or .pt2) and write its outputs as .npy files."""
    from dcopt import api
    import dcopt.compiled as compiled
    from dcopt.backends.cpu.specialize import check_dim_names

    feeds = parse_input_specs(inputs)
    bindings = parse_dims(dims)
    if profile and backend == "reference":
        raise click.UsageError("--profile times the compiled model's steps: it needs --backend cpu (or a build)")
    output_directory(output_dir)  # before running: a bad path costs nothing
    if compiled.is_build_dir(model) or backend == "cpu":
        backend = "cpu"
        sess = compiled.load(model, warm=False) if compiled.is_build_dir(model) else \
            compiled.compile(model, dims=bindings, warm=False)  # one run only: the real one
        check_dim_names(bindings, {d for i in sess.get_inputs() for d in i.shape or () if isinstance(d, str)})
        if random_inputs:
            generated = sess.random_feeds(seed=seed, dims=bindings)
            feeds = {**{k: v for k, v in generated.items() if k not in feeds}, **feeds}
        sess.prepare()  # kernels loaded before the clock starts: the time shown is the run's
        start = time.perf_counter()
        outputs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    else:
        backend = backend or "reference"
        graph = api.load_graph(model)
        check_dim_names(bindings, {d for i in graph.inputs for d in graph.containers[i].type.shape or ()
                                   if isinstance(d, str)})
        if random_inputs:
            generated = api.random_inputs(graph, seed=seed, bindings=bindings)
            feeds = {**{k: v for k, v in generated.items() if k not in feeds}, **feeds}
        start = time.perf_counter()
        outputs = api.run(graph, feeds, backend=backend, file=model)
    elapsed = time.perf_counter() - start
    out_dir = output_directory(output_dir, create=True)
    table = Table(title=f"{Path(model).name}: {len(outputs)} output(s) in {elapsed * 1e3:.1f} ms ({backend})")
    for col in ("output", "dtype", "shape", "min", "max", "mean", "file"):
        table.add_column(col)
    for name, value in outputs.items():
        value = np.asarray(value)
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
        path = out_dir / f"{safe}.npy"
        write_npy(path, value)
        table.add_row(name, str(value.dtype), str(list(value.shape)), *_stats(value), str(path))
    stdout_console().print(table)
    if profile:
        stdout_console().print(profile_table(sess.profile(feeds, reps=profile_reps), top, Path(model).name))


def profile_table(steps: list[dict], top: int, title: str) -> Table:
    """The per-step profile (``CpuSession.profile``) as one table: the total, each kind's total
    and share, then the ``top`` slowest steps. Where a model's time goes, without a script."""
    total = sum(s["seconds"] for s in steps) or 1e-12
    table = Table(title=f"{title}: {len(steps)} timed steps (views take no time), {total * 1e3:.3f} ms in total "
                        "(median per step)")
    for col, justify in (("step", "left"), ("kind", "left"), ("us", "right"), ("share", "right")):
        table.add_column(col, justify=justify)
    kinds: dict[str, list] = {}
    for s in steps:
        kinds.setdefault(s["kind"], []).append(s["seconds"])
    for kind, times in sorted(kinds.items(), key=lambda kv: -sum(kv[1])):
        table.add_row(f"all {len(times)} {kind} step(s)", kind, f"{sum(times) * 1e6:.1f}", f"{sum(times) / total:.1%}")
    if top:
        table.add_section()
        for s in sorted(steps, key=lambda s: -s["seconds"])[:top]:
            table.add_row(s["label"], s["kind"], f"{s['seconds'] * 1e6:.1f}", f"{s['seconds'] / total:.1%}")
    return table
