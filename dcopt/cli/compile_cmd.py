"""``dcopt compile``: compile an ONNX model into a build directory that ``dcopt run`` and
``dcopt.load`` read back. Pipeline selection (``-O``/``--passes``/``--pipeline FILE``) is the
one ``dcopt opt`` and ``dcopt report`` share; the default is O3."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import click
from dcopt.cli.console import stdout_console

from dcopt.cli.pipeline_options import parse_dims, pipeline_options
from dcopt.cli.recorded import recorded


def _keyed(pipeline: tuple[list, str]) -> tuple[list, str]:
    """A pipeline file's label gains its content hash, so editing the file recompiles."""
    steps, label = pipeline
    if label.startswith("file:"):
        digest = hashlib.sha256(Path(label[5:]).read_bytes()).hexdigest()[:12]
        return steps, f"{label}@{digest}"
    return steps, label


@click.command("compile")
@recorded("compile")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False), help="Build directory to write.")
@pipeline_options(default_level="3")
@click.option("--target", default="cpu", show_default=True, type=click.Choice(["cpu"]), help="Code generator.")
@click.option("--threads", type=click.IntRange(1, 4096), default=None,
              help="Threads at run time (default: every core this process may use).")
@click.option("--dim", "dims", multiple=True, metavar="SYMBOL=N", help="Size of a symbolic input dim (default 1).")
@click.option("--dynamic", "dynamic", multiple=True, metavar="SYMBOL|all",
              help="Symbolic input dim one build serves every size of (repeatable; 'all': every one). --dim "
                   "then gives the sizes it is checked at.")
@click.option("--patch", "-p", "patches", multiple=True, metavar="URI", help="Idea patch to apply (repeatable).")
@click.option("--force", is_flag=True, help="Replace OUTPUT if it is an existing dcopt build (never anything else).")
def compile_cmd(model, output, pipeline, target, threads, dims, dynamic, patches, force):
    """Compile MODEL (.onnx, IR .json or torch.export .pt2) into a build directory of generated kernels and weights."""
    import dcopt.compiled as dc
    from dcopt.backends.cpu.build import is_build
    from dcopt.outputs import check_target
    from dcopt.runs.record import current_run

    check_target(output, replaceable=is_build, force=force, what="dcopt build")  # before compiling
    start = time.perf_counter()
    sess = dc.compile(model, pipeline=_keyed(pipeline), target=target, threads=threads, dims=parse_dims(dims),
                      patches=patches, warm=False, dynamic=True if "all" in dynamic else tuple(dynamic))
    path = sess.save(output, force=force)
    m = sess.manifest
    current_run().log_build(m, key=sess.build_key, output=path)
    not_native = m.get("not_native", {})
    native = ("every op native" if not not_native else
              "not native: " + ", ".join(f"{op} x{n}" for op, n in not_native.items()))
    once = 0  # reference steps over weights and sizes alone: once when bound to sizes, by no run
    if m.get("at_bind"):
        once = m["steps"].get("fallback", 0) - sum(n for op, n in not_native.items() if op.endswith("(fallback)"))
        native += f"; {sum(m['at_bind'].values())} step(s) run once per size, {once} of them on the reference executor"
    stdout_console().print(f"{path}: {step_summary(m['steps'], once)} ({native}); pipeline {m['pipeline_applied']}; "
                    f"{sizes_summary(m)}; {time.perf_counter() - start:.2f} s", markup=False, highlight=False)


def sizes_summary(manifest: dict) -> str:
    """What sizes a build runs: every size of its free symbols, or the ones it was compiled for
    (and, where one build for every size was asked for and refused, why)."""
    free = manifest.get("dynamic") or []
    fixed = {k: v for k, v in (manifest.get("bindings") or {}).items() if k not in free}
    text = f"every size of {', '.join(free)}" if free else f"sizes {fixed or '-'}"
    if free and fixed:
        text += f", {fixed}"
    if manifest.get("dynamic_refused"):
        text += f" (one build per size: {manifest['dynamic_refused']})"
    return text


#: Step kinds that move bytes without computing (zero-copy slices, concat copies).
_DATA_MOVEMENT = ("view", "concat")


def step_summary(steps: dict[str, int], fallback_once: int = 0) -> str:
    """``{step kind: count}`` (the manifest's) as what a user asks first: how much is generated
    code, how much a library routine, how much runs on the reference executor (dynamic: sized by
    data at run time; fallback: no expansion yet) on every run -- ``fallback_once`` of the
    fallback steps run only when a build is bound to sizes."""
    kernels = steps.get("kernel", 0)
    library = {k: n for k, n in steps.items() if k not in ("kernel", "dynamic", "fallback", *_DATA_MOVEMENT)}
    moves = sum(steps.get(k, 0) for k in _DATA_MOVEMENT)
    parts = [f"{sum(steps.values())} steps: {kernels} generated kernel(s)",
             f"{sum(library.values())} library call(s)" + (
                 f" ({', '.join(f'{k} {n}' for k, n in library.items())})" if library else "")]
    if moves:
        parts.append(f"{moves} view/copy")
    parts.append(f"{steps.get('dynamic', 0)} dynamic, {steps.get('fallback', 0) - fallback_once} fallback")
    return ", ".join(parts)
